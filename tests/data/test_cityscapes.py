"""Cityscapes reader on a tiny leftImg8bit / gtFine tree (trainIds and raw labelIds)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from ovseg.data.cityscapes import LABEL_ID_TO_TRAIN_ID, CityscapesDataset
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

# raw label ids: road 7, bicycle 33, unlabeled 0, person 24, ego vehicle 1, license plate 255
LABEL_IDS = np.array([[7, 7, 33, 33], [0, 24, 24, 1], [7, 255, 26, 26]], np.uint8)
TRAIN_IDS = np.array([[0, 0, 18, 18], [255, 11, 11, 255], [0, 255, 13, 13]], np.uint8)
FRAMES = (("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000000_000019"))


def write_cityscapes(root, frames=FRAMES, formats=("trainids", "labelids"), size=None):
    """``root/cityscapes`` with val images and fine labels, one folder per city."""
    city = root / "cityscapes"
    rng = np.random.default_rng(4)
    label_ids = LABEL_IDS if size is None else np.resize(LABEL_IDS, size)
    train_ids = TRAIN_IDS if size is None else np.resize(TRAIN_IDS, size)
    for town, name in frames:
        (city / "leftImg8bit/val" / town).mkdir(parents=True, exist_ok=True)
        (city / "gtFine/val" / town).mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (*label_ids.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(city / "leftImg8bit/val" / town / f"{name}_leftImg8bit.png")
        gt = city / "gtFine/val" / town
        if "trainids" in formats:
            Image.fromarray(train_ids).save(gt / f"{name}_gtFine_labelTrainIds.png")
        if "labelids" in formats:
            Image.fromarray(label_ids).save(gt / f"{name}_gtFine_labelIds.png")
        Image.fromarray(label_ids).save(gt / f"{name}_gtFine_instanceIds.png")  # not a label map
    return city


def test_train_ids_read_as_stored(tmp_path):
    write_cityscapes(tmp_path)
    ds = CityscapesDataset(tmp_path)
    assert ds.label_type == "trainids" and len(ds) == 2 and ds.num_classes == 19
    assert ds.class_names[0] == "road" and ds.class_names[18] == "bicycle"
    sample = ds[1]
    assert np.array_equal(sample["label"], TRAIN_IDS) and sample["label"].dtype == np.int64
    assert sample["image_path"].endswith(
        "leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png"
    )
    assert sample["label_path"].endswith("lindau_000000_000019_gtFine_labelTrainIds.png")


def test_raw_label_ids_map_to_train_ids(tmp_path):
    write_cityscapes(tmp_path, formats=("labelids",))
    ds = DATASETS.build({"type": "cityscapes", "root": str(tmp_path / "cityscapes")})
    assert ds.label_type == "labelids"
    assert np.array_equal(ds[0]["label"], TRAIN_IDS)
    assert len(LABEL_ID_TO_TRAIN_ID) == 19
    assert sorted(LABEL_ID_TO_TRAIN_ID.values()) == list(range(19))


def test_unpaired_and_missing(tmp_path):
    city = write_cityscapes(tmp_path)
    (city / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png").unlink()
    with pytest.raises(DatasetError, match="lindau/lindau_000000_000019") as info:
        CityscapesDataset(tmp_path)
    assert "_gtFine_labelTrainIds.png" in str(info.value)
    with pytest.raises(DatasetError, match="leftImg8bit/train"):
        CityscapesDataset(tmp_path, split="train")
    shutil.rmtree(city / "gtFine")
    with pytest.raises(DatasetError, match=r"Missing folder .*gtFine/val \(the fine labels\)"):
        CityscapesDataset(tmp_path)


def test_not_a_cityscapes_folder(tmp_path):
    (tmp_path / "cityscapes").mkdir()
    with pytest.raises(DatasetError, match="leftImg8bit/val") as info:
        CityscapesDataset(tmp_path)
    assert "datasets/README.md" in str(info.value)
