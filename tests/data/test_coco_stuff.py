"""COCO-Stuff-164k reader: mmseg's _labelTrainIds.png and the raw stuffthingmaps."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ovseg.data.coco_stuff import RAW_IDS, THING_CATEGORY_IDS, COCOStuffDataset
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

# raw stuffthingmaps values (COCO category id - 1): person 0, stop sign 12 (id 11 is unused),
# banner 91 (first stuff), wood 181 (last stuff), 255 unlabelled
RAW_LABEL = np.array([[0, 0, 12, 12], [91, 91, 181, 255], [255, 0, 91, 181]], np.uint8)
# what mmseg's converter writes for it: used raw ids in increasing order become 0..170
TRAIN_LABEL = np.array([[0, 0, 11, 11], [80, 80, 170, 255], [255, 0, 80, 170]], np.uint8)


def write_coco_stuff(root, stems=("000000000139", "000000000285"), formats=("raw", "trainids")):
    """``root/coco_stuff164k`` with val2017 images and the chosen label files."""
    coco = root / "coco_stuff164k"
    (coco / "images/val2017").mkdir(parents=True, exist_ok=True)
    (coco / "annotations/val2017").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for stem in stems:
        image = rng.integers(0, 256, (*RAW_LABEL.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(coco / "images/val2017" / f"{stem}.jpg")
        if "raw" in formats:
            Image.fromarray(RAW_LABEL).save(coco / "annotations/val2017" / f"{stem}.png")
        if "trainids" in formats:
            Image.fromarray(TRAIN_LABEL).save(
                coco / "annotations/val2017" / f"{stem}_labelTrainIds.png"
            )
    return coco


def test_tables_follow_the_coco_ids():
    assert len(RAW_IDS) == 171 and len(THING_CATEGORY_IDS) == 80
    assert RAW_IDS[11] == 12 and RAW_IDS[80] == 91 and RAW_IDS[-1] == 181
    assert THING_CATEGORY_IDS[:12] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13)
    assert THING_CATEGORY_IDS[-1] == 90


def test_label_train_ids_are_read_as_stored(tmp_path):
    coco = write_coco_stuff(tmp_path)
    # the COCO-Object converter may have written beside them; those files are not Stuff labels
    Image.fromarray(RAW_LABEL).save(coco / "annotations/val2017/000000000139_instanceTrainIds.png")
    ds = COCOStuffDataset(tmp_path)
    assert ds.label_format == "trainids" and len(ds) == 2
    assert ds.num_classes == 171 and ds.class_names[0] == "person"
    assert ds.class_names[11] == "stopsign" and ds.class_names[80] == "banner"
    assert ds.class_names[170] == "wood"
    sample = ds[0]
    assert np.array_equal(sample["label"], TRAIN_LABEL) and sample["label"].dtype == np.int64
    assert sample["label_path"].endswith("000000000139_labelTrainIds.png")


def test_raw_stuffthingmaps_map_to_the_same_indices(tmp_path):
    write_coco_stuff(tmp_path)
    trainids = COCOStuffDataset(tmp_path, split="val", label_format="trainids")
    raw = DATASETS.build(
        {
            "type": "coco_stuff",
            "root": str(tmp_path / "coco_stuff164k"),
            "label_format": "stuffthingmaps",
        }
    )
    assert raw.samples[0][1].name == "000000000139.png"
    for i in range(2):
        assert np.array_equal(raw[i]["label"], trainids[i]["label"])


def test_auto_falls_back_to_raw_maps(tmp_path):
    write_coco_stuff(tmp_path, formats=("raw",))
    ds = COCOStuffDataset(tmp_path)
    assert ds.label_format == "stuffthingmaps"
    assert np.array_equal(ds[1]["label"], TRAIN_LABEL)


def test_unused_raw_ids_are_ignored(tmp_path):
    coco = write_coco_stuff(tmp_path, stems=("x",), formats=("raw",))
    Image.fromarray(np.full(RAW_LABEL.shape, 11, np.uint8)).save(coco / "annotations/val2017/x.png")
    assert (COCOStuffDataset(tmp_path)[0]["label"] == 255).all()


def test_mislaid_coco_stuff(tmp_path):
    coco = write_coco_stuff(tmp_path)
    Image.fromarray(TRAIN_LABEL).save(coco / "annotations/val2017/000000000777_labelTrainIds.png")
    with pytest.raises(DatasetError, match="000000000777") as info:
        COCOStuffDataset(tmp_path)
    assert "images/val2017" in str(info.value) and "datasets/README.md" in str(info.value)
    assert "have no image" in str(info.value)
    (coco / "annotations/val2017/000000000777_labelTrainIds.png").unlink()
    (coco / "annotations/val2017/000000000285_labelTrainIds.png").unlink()
    with pytest.raises(DatasetError, match="000000000285") as info:
        COCOStuffDataset(tmp_path)
    assert "have no label <id>_labelTrainIds.png" in str(info.value)
    with pytest.raises(DatasetError, match="images/train2017"):
        COCOStuffDataset(tmp_path, split="train2017")
    with pytest.raises(DatasetError, match="val2017"):
        COCOStuffDataset(tmp_path, split="test")
