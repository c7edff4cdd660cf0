import json

import numpy as np
import pytest
from pycocotools.coco import COCO

import ovseg.data.writers as writers_mod
from ovseg.data.coco_writer import CocoWriter, mask_to_polygons, mask_to_rle
from ovseg.data.synthetic import (
    CLASS_NAMES,
    THING_CLASSES,
    UNSEEN_CLASSES,
    generate_scene,
    scene_rng,
)
from ovseg.data.writers import default_num_val, write_synthetic_world
from ovseg.errors import DatasetError

NUM_TRAIN, NUM_VAL, WORLD_SEED = 6, 4, 3  # as written by the synthetic_world fixture


def _files(root):
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_tree_is_exactly_the_documented_layout(synthetic_world):
    out, summary = synthetic_world
    assert (summary["num_train"], summary["num_val"], summary["seed"]) == (
        NUM_TRAIN,
        NUM_VAL,
        WORLD_SEED,
    )
    files = _files(out)
    ade = {"ADEChallengeData2016/ovseg_classes.txt", "ADEChallengeData2016/ovseg_split.json"}
    for i in range(1, NUM_TRAIN + 1):
        ade |= {
            f"ADEChallengeData2016/images/training/ADE_train_{i:08d}.jpg",
            f"ADEChallengeData2016/annotations/training/ADE_train_{i:08d}.png",
        }
    for i in range(1, NUM_VAL + 1):
        ade |= {
            f"ADEChallengeData2016/images/validation/ADE_val_{i:08d}.jpg",
            f"ADEChallengeData2016/annotations/validation/ADE_val_{i:08d}.png",
        }
    coco = {"coco/annotations/instances_train.json", "coco/annotations/instances_val.json"}
    coco |= {f"coco/train/{i:012d}.jpg" for i in range(1, NUM_TRAIN + 1)}
    coco |= {f"coco/val/{i:012d}.jpg" for i in range(1, NUM_VAL + 1)}
    assert {f for f in files if f.startswith(("ADE", "coco"))} == ade | coco
    caption_files = {f for f in files if f.startswith("captions/")}
    assert {"captions/train.csv", "captions/val.csv"} <= caption_files
    assert all(
        f.endswith(".jpg") for f in caption_files - {"captions/train.csv", "captions/val.csv"}
    )
    assert "synthetic_world.json" in files and not any(".tmp" in f for f in files)
    assert json.loads((out / "synthetic_world.json").read_text()) == summary
    split = json.loads((out / "ADEChallengeData2016/ovseg_split.json").read_text())
    assert split == {"classes": list(CLASS_NAMES), "unseen": list(UNSEEN_CLASSES)}
    names = (out / "ADEChallengeData2016/ovseg_classes.txt").read_text().splitlines()
    assert names == list(CLASS_NAMES)
    assert summary["coco"]["num_train_images"] == NUM_TRAIN
    assert summary["ade20k"]["num_validation"] == NUM_VAL


def test_ade_annotation_png_is_class_plus_one(synthetic_world):
    from PIL import Image

    out, _ = synthetic_world
    scene = generate_scene(scene_rng(WORLD_SEED, "train", 0), split="train")
    png = Image.open(out / "ADEChallengeData2016/annotations/training/ADE_train_00000001.png")
    assert png.mode == "L"
    assert np.array_equal(np.asarray(png), scene.label + 1)
    jpg = Image.open(out / "ADEChallengeData2016/images/training/ADE_train_00000001.jpg")
    assert jpg.format == "JPEG" and jpg.mode == "RGB" and jpg.size == (128, 128)


@pytest.mark.parametrize("split,count", [("train", NUM_TRAIN), ("val", NUM_VAL)])
def test_coco_json_loads_and_masks_match(synthetic_world, split, count):
    out, _ = synthetic_world
    coco = COCO(str(out / f"coco/annotations/instances_{split}.json"))
    cats = coco.loadCats(coco.getCatIds())
    assert [c["id"] for c in cats] == list(range(1, 65))
    assert [c["name"] for c in cats] == list(THING_CLASSES)
    assert all(c["supercategory"] == c["name"].split()[1] for c in cats)
    assert sorted(coco.getImgIds()) == list(range(1, count + 1))
    for image_id in range(1, count + 1):
        scene = generate_scene(scene_rng(WORLD_SEED, split, image_id - 1), split=split)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(scene.instances)
        for ann, obj in zip(anns, scene.instances):
            assert isinstance(ann["segmentation"]["counts"], str)
            assert np.array_equal(coco.annToMask(ann).astype(bool), obj.mask)
            x0, y0, x1, y1 = obj.box
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert ann["area"] == obj.area and ann["iscrowd"] == 0
            assert ann["category_id"] == obj.class_id + 1
        assert (out / "coco" / split / coco.loadImgs([image_id])[0]["file_name"]).is_file()


def test_polygon_segmentation_rasterises_to_the_same_pixels(tmp_path):
    write_synthetic_world(
        tmp_path,
        num_train=3,
        num_val=2,
        seed=9,
        formats=("coco",),
        coco_segmentation="polygon",
        progress=False,
    )
    coco = COCO(str(tmp_path / "coco/annotations/instances_val.json"))
    for image_id in (1, 2):
        scene = generate_scene(scene_rng(9, "val", image_id - 1), split="val")
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        for ann, obj in zip(anns, scene.instances):
            assert isinstance(ann["segmentation"], list)
            assert np.array_equal(coco.annToMask(ann).astype(bool), obj.mask)
    assert not (tmp_path / "ADEChallengeData2016").exists()


def test_mask_encoders_handle_holes():
    mask = np.zeros((12, 14), bool)
    mask[2:10, 3:12] = True
    mask[4:7, 6:9] = False  # a hole, like a ring
    mask[11, 0] = True  # an isolated pixel in the corner
    from pycocotools import mask as mu

    polys = mask_to_polygons(mask)
    assert np.array_equal(mu.decode(mu.merge(mu.frPyObjects(polys, 12, 14))).astype(bool), mask)
    rle = mask_to_rle(mask)
    rle_bytes = {"size": rle["size"], "counts": rle["counts"].encode()}
    assert np.array_equal(mu.decode(rle_bytes).astype(bool), mask)
    with pytest.raises(ValueError, match="segmentation"):
        CocoWriter(".", THING_CLASSES, segmentation="mask")


def test_interrupted_run_leaves_no_index(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = writers_mod.generate_scene

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(writers_mod, "generate_scene", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_world(tmp_path, num_train=5, num_val=2, progress=False)
    files = _files(tmp_path)
    assert any(f.endswith(".jpg") for f in files)  # it did start writing
    for index in (
        "coco/annotations/instances_train.json",
        "captions/train.csv",
        "ADEChallengeData2016/ovseg_classes.txt",
        "ADEChallengeData2016/ovseg_split.json",
        "synthetic_world.json",
    ):
        assert index not in files
    assert not any(f.endswith((".json", ".csv", ".txt")) for f in files)
    assert not any(".tmp" in f for f in files)


def test_existing_output_needs_overwrite(tmp_path):
    write_synthetic_world(tmp_path, num_train=2, num_val=1, formats=("ade20k",), progress=False)
    with pytest.raises(DatasetError, match="overwrite"):
        write_synthetic_world(tmp_path, num_train=1, num_val=1, formats=("ade20k",), progress=False)
    write_synthetic_world(
        tmp_path, num_train=1, num_val=1, formats=("ade20k",), progress=False, overwrite=True
    )
    # stale files from the bigger first run are gone
    assert len(list((tmp_path / "ADEChallengeData2016/images/training").iterdir())) == 1


def test_bad_arguments(tmp_path):
    with pytest.raises(DatasetError, match="formats"):
        write_synthetic_world(tmp_path, num_train=1, formats=("voc",), progress=False)
    with pytest.raises(DatasetError, match=">= 0"):
        write_synthetic_world(tmp_path, num_train=-1, progress=False)
    with pytest.raises(DatasetError, match="neighbour_fraction"):
        write_synthetic_world(tmp_path, num_train=1, neighbour_fraction=1.5, progress=False)
    assert default_num_val(10) == 50 and default_num_val(2000) == 200
