"""``ovseg eval --suite ovss8``: two of the eight datasets present, a tiny random-init CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import ovseg.data.folder  # noqa: F401  (registers FolderDataset)
from ovseg.cli import main
from ovseg.errors import ConfigError, DatasetError
from ovseg.evaluation.suite import OVSS8, format_row, run_suite
from tests.conftest import TINY_CONFIGS
from tests.data.test_cityscapes import write_cityscapes

TITLES = ["VOC21", "PC60", "Object", "VOC20", "PC59", "Stuff", "City", "ADE"]


def write_ade(root, num=2):
    """``root/ade/ADEChallengeData2016`` (mmseg's data-root layout), 16x24 images."""
    ade = root / "ade" / "ADEChallengeData2016"
    (ade / "images/validation").mkdir(parents=True)
    (ade / "annotations/validation").mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(1, num + 1):
        stem = f"ADE_val_{i:08d}"
        image = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
        Image.fromarray(image).save(ade / f"images/validation/{stem}.jpg")
        label = rng.integers(0, 151, (16, 24)).astype(np.uint8)  # 0 unlabelled, 1-150 classes
        Image.fromarray(label).save(ade / f"annotations/validation/{stem}.png")
    return ade


@pytest.fixture(scope="module")
def tiny_overrides(tmp_path_factory):
    """Overrides that turn every method preset into the tiny random-init ViT on small crops."""
    configs = tmp_path_factory.mktemp("suite_model_configs")
    (configs / "ovseg-test-vit.json").write_text(json.dumps(TINY_CONFIGS["ovseg-test-vit"]))
    return [
        f"custom_model_configs={configs}",
        "pipeline.backbone.model_name=ovseg-test-vit",
        "pipeline.backbone.pretrained=null",
        "pipeline.backbone.templates=photo",
        "pipeline.inference.short_side=32",
        "pipeline.inference.crop_size=32",
        "pipeline.inference.stride=16",
        "evaluation.progress=false",
    ]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite_data")
    write_cityscapes(root, size=(16, 24))
    write_ade(root)
    return root


def test_suite_row_with_two_of_eight(data_root, tiny_overrides, tmp_path, capsys, one_torch_thread):
    work = tmp_path / "work"
    args = ["eval", "--suite", "ovss8", "--preset", "sclip-vitb16", "--data-root", str(data_root)]
    code = main([*args, "--work-dir", str(work), "--limit", "1", *tiny_overrides])
    assert code == 0
    printed = capsys.readouterr().out

    document = json.loads((work / "ovss8.json").read_text())
    assert document["order"] == [b.key for b in OVSS8]
    assert [b.title for b in OVSS8] == TITLES
    assert set(document["benchmarks"]) == {"city", "ade"}
    assert list(document["missing"]) == ["voc21", "pc60", "object", "voc20", "pc59", "stuff"]
    assert str(data_root / "VOCdevkit" / "VOC2012") in document["missing"]["voc21"]
    assert "coco_stuff164k" in document["missing"]["object"]
    for key, benchmark_dir in (("city", "city"), ("ade", "ade")):
        entry = document["benchmarks"][key]
        results = json.loads((work / benchmark_dir / "results.json").read_text())
        assert entry["num_images"] == results["num_images"] == 1  # --limit 1 of 2 images
        assert entry["mIoU"] == pytest.approx(results["metrics"]["mIoU"])
        assert (work / benchmark_dir / "config.yaml").is_file()
    city = json.loads((work / "city" / "results.json").read_text())
    ade = json.loads((work / "ade" / "results.json").read_text())
    assert city["num_classes"] == 19 and ade["num_classes"] == 150
    average = document["average"]
    assert average["over"] == ["city", "ade"] and len(average["excluded"]) == 6
    expected = (city["metrics"]["mIoU"] + ade["metrics"]["mIoU"]) / 2
    assert average["mIoU"] == pytest.approx(expected)

    # the printed row: eight columns in paper order, six of them "missing", then the average
    row_lines = printed[printed.index("ovss8 mIoU") :].splitlines()
    header = next(line for line in row_lines if "VOC21" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == [*TITLES, "Avg (2/8)"]
    values = row_lines[row_lines.index(header) + 2]
    cells = [c.strip() for c in values.strip("|").split("|")]
    assert cells[:6] == ["missing"] * 6
    assert cells[6] == f"{city['metrics']['mIoU']:.2f}" and cells[8] == f"{expected:.2f}"
    assert "missing (6, not in the average)" in printed
    assert f"VOC21: expected {data_root / 'VOCdevkit' / 'VOC2012'}" in printed
    assert not [p for p in work.rglob(".*")]  # no temporary files left behind


def test_suite_without_any_dataset_errors(tmp_path, tiny_overrides, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    args = ["eval", "--suite", "ovss8", "--preset", "sclip-vitb16", "--data-root", str(empty)]
    assert main([*args, "--work-dir", str(tmp_path / "w"), *tiny_overrides]) == 2
    err = capsys.readouterr().err
    assert "None of the 8 datasets" in err and "datasets/README.md" in err
    for folder in ("VOCdevkit/VOC2012", "VOCdevkit/VOC2010", "cityscapes", "coco_stuff164k"):
        assert str(empty / folder) in err
    assert not (tmp_path / "w").exists()


def test_mislaid_dataset_stops_before_running(tmp_path, tiny_overrides):
    write_ade(tmp_path)
    (tmp_path / "cityscapes" / "leftImg8bit" / "val").mkdir(parents=True)  # no gtFine
    with pytest.raises(DatasetError, match=r"(?s)City: .*cityscapes exists .*gtFine/val") as info:
        run_suite("ovss8", "sclip-vitb16", tmp_path, tiny_overrides, work_dir=tmp_path / "w")
    assert "move it away" in str(info.value)
    assert not (tmp_path / "w").exists()  # nothing ran


def test_suite_arguments_are_checked(tmp_path, capsys):
    write_ade(tmp_path)
    with pytest.raises(ConfigError, match="shapes-tiny-voc21"):
        run_suite("ovss8", "shapes-tiny", tmp_path)
    with pytest.raises(ConfigError, match="ovss8"):
        run_suite("ovss9", "sclip-vitb16", tmp_path)
    assert main(["eval", "--suite", "ovss8", "--data-root", str(tmp_path)]) == 2
    assert "--preset" in capsys.readouterr().err
    assert main(["eval", "cfg.yaml", "--preset", "sclip-vitb16"]) == 2
    assert "--suite" in capsys.readouterr().err
    assert main(["eval"]) == 2
    assert "ovss8" in capsys.readouterr().err


def test_format_row_marks_missing_and_undefined():
    scores = {"voc21": 50.0, "city": None}
    text = format_row(OVSS8, scores, 50.0)
    cells = [c.strip() for c in text.splitlines()[3].strip("|").split("|")]
    assert cells == ["50.00", *["missing"] * 5, "nan", "missing", "50.00"]
    assert "Avg (1/8)" in text


def test_eval_config_limit_and_dataset_ignore_index(tmp_path, tiny_overrides, capsys):
    """``ovseg eval CONFIG --limit``: the first N images; a dataset's own ignore value is used."""
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    label = np.array([[0, 1, 65535, 65535], [1, 1, 0, 65535]], np.uint16)
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((2, 4, 3), 99, np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(label).save(root / "labels" / f"{name}.png")
    (root / "classes.txt").write_text("sky\ncat\n")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        "_base_: sclip-vitb16\n"
        f"data:\n  test: {{type: FolderDataset, root: {root}, ignore_index: 65535}}\n"
    )
    work = tmp_path / "work"
    overrides = [o for o in tiny_overrides if not o.startswith("pipeline.inference")]
    overrides += ["pipeline.inference.mode=whole", "pipeline.inference.short_side=32"]
    assert main(["eval", str(cfg), "--work-dir", str(work), "--limit", "2", *overrides]) == 0
    results = json.loads((work / "results.json").read_text())
    assert results["num_images"] == 2 and results["ignore_index"] == 65535
    # predictions on 65535 pixels are dropped too (with 255 as the ignore value they would count)
    kept = 2 * int((label != 65535).sum())
    assert sum(results["counts"]["label_area"]) == sum(results["counts"]["pred_area"]) == kept
    assert main(["eval", str(cfg), "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err
