"""detectron2 dataset dicts as input: the semantic reader, ``ovseg eval`` and ``ovseg predict``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from ovseg.cli import main
from ovseg.data.ade20k import ADE20KDataset
from ovseg.data.ade_layout import ADE_DIRNAME, CLASS_FILENAME
from ovseg.data.detectron2 import Detectron2SemSegDataset
from ovseg.errors import DatasetError
from ovseg.evaluation.loop import evaluate

# one window per 64 px scene, no PAMR: the comparison needs equal inputs, not the best labels
FAST = ["pipeline.inference.mode=whole", "pipeline.postprocess.pamr=null"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Two synthetic scenes in the ADE layout, and the same scenes as detectron2 dicts
    (relative paths; labels re-encoded as class index with 255 ignored)."""
    from ovseg.data.writers import write_synthetic_world

    root = tmp_path_factory.mktemp("d2_synth")
    write_synthetic_world(
        root, num_train=0, num_val=2, seed=7, image_size=64, formats=("ade20k", "coco"),
        progress=False,
    )  # fmt: skip
    ade = ADE20KDataset(root, split="validation")
    dicts = []
    for index in range(len(ade)):
        sample = ade[index]
        image = root / "d2" / f"img{index}.png"
        image.parent.mkdir(exist_ok=True)
        Image.fromarray(sample["image"]).save(image)
        label = root / "d2" / f"lab{index}.png"
        Image.fromarray(sample["label"].astype(np.uint8)).save(label)
        dicts.append(
            {"file_name": image.name, "height": 64, "width": 64, "image_id": 100 + index,
             "sem_seg_file_name": label.name}
        )  # fmt: skip
    (root / "d2" / "dicts.json").write_text(json.dumps(dicts))
    return root


def test_semantic_reader_gives_the_stored_labels(synth):
    class_file = synth / ADE_DIRNAME / CLASS_FILENAME
    d2 = Detectron2SemSegDataset(synth / "d2" / "dicts.json", class_file=str(class_file))
    ade = ADE20KDataset(synth, split="validation")
    assert len(d2) == 2 and d2.class_names == ade.class_names
    np.testing.assert_array_equal(d2[1]["label"], ade[1]["label"])
    np.testing.assert_array_equal(d2[1]["image"], ade[1]["image"])


def test_semantic_reader_refuses_incomplete_dicts(synth, tmp_path):
    dicts = json.loads((synth / "d2" / "dicts.json").read_text())
    del dicts[1]["sem_seg_file_name"]
    path = tmp_path / "dicts.json"
    path.write_text(json.dumps(dicts))
    with pytest.raises(DatasetError, match="sem_seg_file_name"):
        Detectron2SemSegDataset(path, classes=["a"], image_root=synth / "d2")
    path.write_text(json.dumps({"file_name": "x"}))
    with pytest.raises(DatasetError, match="JSON list"):
        Detectron2SemSegDataset(path, classes=["a"])


@pytest.mark.slow
def test_eval_on_dicts_equals_eval_on_the_ade_layout(synth, tmp_path):
    class_file = str(synth / ADE_DIRNAME / CLASS_FILENAME)
    numbers = {}
    for name, test in (
        ("ade", {"type": "ADE20KDataset", "root": str(synth), "split": "validation"}),
        ("d2", {"type": "Detectron2SemSegDataset", "json_file": str(synth / "d2" / "dicts.json"),
                "class_file": class_file}),
    ):  # fmt: skip
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            yaml.safe_dump(
                {"_base_": "shapes-tiny", "data": {"test": test}, "evaluation": {"progress": False}}
            )  # fmt: skip
        )
        numbers[name] = evaluate(str(config), FAST, work_dir=tmp_path / name)
    assert numbers["d2"]["num_images"] == 2
    for key in ("aAcc", "mIoU", "mAcc"):
        assert numbers["d2"][key] == numbers["ade"][key]


def test_predict_on_dicts_exports_detectron2_files(synth, tmp_path):
    out = tmp_path / "out"
    dicts_file = synth / "d2" / "dicts.json"
    args = ["predict", str(dicts_file), "--preset", "shapes-tiny", "--vocab", "red star, water"]
    assert main([*args, "--export", "detectron2", "--out", str(out), "--quiet"]) == 0
    folder = out / "export" / "detectron2"
    dicts = json.loads((folder / "dataset_dicts.json").read_text())
    images = [str(synth / "d2" / f"img{i}.png") for i in range(2)]
    assert [(d["file_name"], d["image_id"]) for d in dicts] == list(zip(images, [100, 101]))
    entries = json.loads((folder / "sem_seg_predictions.json").read_text())
    assert {e["file_name"] for e in entries} <= set(images)
    assert all(set(e) == {"file_name", "category_id", "segmentation"} for e in entries)
    assert {e["category_id"] for e in entries} <= {0, 1}
    assert sorted(p.name for p in out.glob("*_labels.png")) == [
        "img0_labels.png",
        "img1_labels.png",
    ]


def _coco_as_dicts(coco_root, out) -> None:
    """The synthetic COCO split as detectron2 dicts (contiguous ids, XYWH boxes, same masks)."""
    data = json.loads((coco_root / "annotations" / "instances_val.json").read_text())
    contiguous = {
        c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))
    }
    dicts = {
        img["id"]: {"file_name": str(coco_root / "val" / img["file_name"]),
                    "height": img["height"], "width": img["width"], "image_id": img["id"],
                    "annotations": []}
        for img in data["images"]
    }  # fmt: skip
    for ann in data["annotations"]:
        dicts[ann["image_id"]]["annotations"].append(
            {"bbox": ann["bbox"], "bbox_mode": 1, "segmentation": ann["segmentation"],
             "category_id": contiguous[ann["category_id"]], "iscrowd": ann.get("iscrowd", 0)}
        )  # fmt: skip
    out.write_text(json.dumps(list(dicts.values())))
    names = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    return names


@pytest.mark.slow
def test_instance_eval_on_dicts_equals_eval_on_coco(synth, tmp_path):
    names = _coco_as_dicts(synth / "coco", tmp_path / "dicts.json")
    numbers = {}
    for name, test in (
        ("coco", {"type": "COCOInstances", "root": str(synth / "coco"), "split": "val"}),
        ("d2", {"type": "Detectron2InstanceDataset", "json_file": str(tmp_path / "dicts.json"),
                "classes": names}),
    ):  # fmt: skip
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "_base_": "shapes-tiny",
                    "data": {"test": test},
                    "vocabulary": None,
                    "evaluation": {"type": "CocoInstanceEvaluator", "progress": False},
                }
            )  # fmt: skip
        )
        # SAM's proposals on a coarse grid on the 64 px scene: the comparison needs equal
        # inputs only
        fast = ["pipelines.instance=${pipelines.instance_sam}",
                "pipelines.instance_sam.proposals.points_per_side=4",
                "pipelines.instance_sam.inference.short_side=64"]  # fmt: skip
        numbers[name] = evaluate(str(config), fast, work_dir=tmp_path / name, limit=1)
    assert numbers["d2"]["num_predictions"] == numbers["coco"]["num_predictions"] > 0
    for iou_type in ("bbox", "segm"):
        assert numbers["d2"][iou_type]["AP"] == numbers["coco"][iou_type]["AP"], iou_type
