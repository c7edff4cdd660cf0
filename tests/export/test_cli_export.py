"""``ovseg predict DIR --task instance --export coco,yolo`` end to end, and its resumption."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from ovseg.cli import main
from ovseg.data.synthetic import SyntheticSceneDataset


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    scenes = SyntheticSceneDataset(num=3, seed=7, split="val")
    (folder / "sub").mkdir()
    names = ["a.png", "b.jpg", "sub/c.png"]
    for index, name in enumerate(names):
        Image.fromarray(scenes[index]["image"]).save(folder / name)
    return folder


def _predict(folder, out, *extra):
    args = ["predict", str(folder), "--preset", "shapes-tiny", "--task", "instance"]
    return main([*args, "--export", "coco,yolo", "--out", str(out), "--quiet", *extra])


def _coco(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_instance_folder_export_and_resume(scene_folder, tmp_path):
    out = tmp_path / "out"
    assert _predict(scene_folder, out) == 0
    export = out / "export"
    report = json.loads((out / "report.json").read_text())
    assert report["export"]["complete"] and report["export"]["images"] == 3
    coco = _coco(export / "coco" / "annotations.json")
    files = {img["file_name"]: img for img in coco.dataset["images"]}
    assert sorted(files) == ["a.png", "b.jpg", "sub/c.png"]
    total = 0
    for name, stem in (("a.png", "a"), ("b.jpg", "b"), ("sub/c.png", "sub/c")):
        predicted = json.loads((out / f"{stem}.json").read_text())
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[files[name]["id"]]))
        assert [a["area"] for a in anns] == [i["area"] for i in predicted["instances"]]
        names = [coco.cats[a["category_id"]]["name"] for a in anns]
        assert names == [i["name"] for i in predicted["instances"]]
        assert (files[name]["height"], files[name]["width"]) == tuple(predicted["image_size"])
        label_file = export / "yolo" / "labels" / f"{stem}.txt"
        assert len(label_file.read_text().splitlines()) >= len(anns)
        total += len(anns)
    assert total > 0, "the tiny preset should find instances in the synthetic scenes"
    assert (export / "yolo" / "data.yaml").is_file()
    assert (export / "yolo" / "images" / "sub" / "c.png").is_file()
    before = coco.dataset

    # An interrupted run: one image's results and export record are missing, no COCO file.
    (out / "sub" / "c.json").unlink()
    (export / "coco" / "records" / "sub" / "c.json").unlink()
    (export / "coco" / "annotations.json").unlink()
    assert _predict(scene_folder, out, "--skip-existing") == 0
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["skipped"] == 2 and report["counts"]["ok"] == 1
    after = _coco(export / "coco" / "annotations.json").dataset
    assert after["images"] == before["images"]
    assert after["categories"] == before["categories"]
    strip = [{k: v for k, v in a.items() if k != "score"} for a in before["annotations"]]
    assert [{k: v for k, v in a.items() if k != "score"} for a in after["annotations"]] == strip
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["complete"] and sorted(manifest["images"]) == ["a.png", "b.jpg", "sub/c.png"]


def test_bad_export_options_exit_2_before_any_model(scene_folder, tmp_path, capsys):
    assert _predict(scene_folder, tmp_path / "o", "--export", "coco,tiff") == 2
    assert "--export takes formats" in capsys.readouterr().err
    args = ["predict", str(scene_folder), "--export", "coco", "--polygon-tolerance", "-1"]
    assert main([*args, "--out", str(tmp_path / "o2")]) == 2
    assert not np.any([p.name == "export" for p in tmp_path.rglob("*")])


def test_semantic_folder_to_every_format(scene_folder, tmp_path):
    from ovseg.data.ade20k import ADE20KDataset
    from ovseg.io import read_label_png

    out = tmp_path / "out"
    args = ["predict", str(scene_folder), "--preset", "shapes-tiny", "--quiet", "--out", str(out)]
    assert main([*args, "--export", "coco,yolo,labelme,cvat,ade"]) == 0
    export = out / "export"
    report = json.loads((out / "report.json").read_text())
    assert [f["format"] for f in report["export"]["formats"]] == [
        "coco",
        "yolo",
        "labelme",
        "cvat",
        "ade",
    ]
    coco = _coco(export / "coco" / "annotations.json")
    class_names = [c["name"] for c in coco.dataset["categories"]]
    dataset = ADE20KDataset(export / "ade", split="validation")
    assert dataset.class_names == class_names
    for index, stem in enumerate(["a", "b", "sub/c"]):
        predicted = read_label_png(out / f"{stem}_labels.png").astype(np.int64)
        sample = dataset[index]
        assert sample["filename"].endswith(
            stem.replace("/", "__") + Path(sample["filename"]).suffix
        )
        assert np.array_equal(sample["label"], predicted)
        image_id = index + 1
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            label = class_names.index(coco.cats[ann["category_id"]]["name"])
            assert np.array_equal(coco.annToMask(ann).astype(bool), predicted == label)
        shapes = json.loads((export / "labelme" / f"{stem}.json").read_text())["shapes"]
        assert {s["label"] for s in shapes} <= set(class_names)
    assert (export / "cvat" / "annotations.xml").is_file()


def test_single_image_referring_export(scene_folder, tmp_path):
    out = tmp_path / "out"
    args = ["predict", str(scene_folder / "a.png"), "--preset", "shapes-tiny", "--quiet"]
    prompt = ["--task", "referring", "--prompt", "red circle", "--export", "coco,labelme"]
    assert main([*args, *prompt, "--out", str(out)]) == 0
    coco = _coco(out / "export" / "coco" / "annotations.json")
    assert [c["name"] for c in coco.dataset["categories"]] == ["red circle"]
    (ann,) = coco.dataset["annotations"]
    predicted = np.array(Image.open(out / "a_mask.png")) > 0
    assert np.array_equal(coco.annToMask(ann).astype(bool), predicted)
    labelme = json.loads((out / "export" / "labelme" / "a.json").read_text())
    assert Path(labelme["imagePath"]).name == "a.png"
