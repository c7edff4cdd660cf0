"""COCO-Object reader: the converter's _instanceTrainIds.png, raw stuffthingmaps, instances JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ovseg.data.coco_object import COCOObjectDataset, stuff_raw_to_object
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

# raw stuffthingmaps: person 0, stop sign 12, toothbrush 89 (COCO id 90), stuff 91 / 181, 255
RAW_LABEL = np.array([[0, 0, 12, 12], [89, 91, 181, 255], [255, 0, 91, 89]], np.uint8)
# cvt_coco_object.py: things -> thing index + 1; stuff and unlabelled -> 0 (background)
OBJECT_LABEL = np.array([[1, 1, 12, 12], [80, 0, 0, 0], [0, 1, 0, 80]], np.uint8)


def write_png_layout(root, formats=("raw", "instance"), stems=("000000000139", "000000000285")):
    coco = root / "coco_stuff164k"
    (coco / "images/val2017").mkdir(parents=True, exist_ok=True)
    (coco / "annotations/val2017").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for stem in stems:
        image = rng.integers(0, 256, (*RAW_LABEL.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(coco / "images/val2017" / f"{stem}.jpg")
        if "raw" in formats:
            Image.fromarray(RAW_LABEL).save(coco / "annotations/val2017" / f"{stem}.png")
        if "instance" in formats:
            Image.fromarray(OBJECT_LABEL).save(
                coco / "annotations/val2017" / f"{stem}_instanceTrainIds.png"
            )
    return coco


def box_polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def write_instances(root, categories=(1, 18), extra_image=False):
    """A COCO folder: val2017/*.jpg and annotations/instances_val2017.json (polygons)."""
    coco = root / "coco"
    (coco / "val2017").mkdir(parents=True, exist_ok=True)
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    images = [
        {"id": 139, "file_name": "000000000139.jpg", "height": 20, "width": 24},
        {"id": 285, "file_name": "000000000285.jpg", "height": 16, "width": 16},
    ]
    for info in images + ([{"file_name": "000000000999.jpg"}] if extra_image else []):
        shape = (info.get("height", 8), info.get("width", 8), 3)
        Image.fromarray(np.full(shape, 90, np.uint8)).save(coco / "val2017" / info["file_name"])
    person, dog = categories
    annotations = [
        # a small dog inside a large person: the dog must stay on top
        {"id": 2, "image_id": 139, "category_id": dog, "iscrowd": 0, "area": 16.0,
         "bbox": [10, 8, 4, 4], "segmentation": box_polygon(10, 8, 14, 12)},
        {"id": 1, "image_id": 139, "category_id": person, "iscrowd": 0, "area": 240.0,
         "bbox": [2, 2, 20, 12], "segmentation": box_polygon(2, 2, 22, 14)},
    ]  # fmt: skip
    categories_json = [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in categories]
    document = {"images": images, "annotations": annotations, "categories": categories_json}
    (coco / "annotations/instances_val2017.json").write_text(json.dumps(document))
    return coco


def test_converter_table():
    table = stuff_raw_to_object()
    assert table[0] == 1 and table[12] == 12 and table[89] == 80
    assert table[91] == 0 and table[181] == 0 and table[255] == 0
    assert table[11] == 255  # a COCO id without objects (never in the maps)


def test_instance_train_ids_are_the_reference_source(tmp_path):
    write_png_layout(tmp_path)
    ds = COCOObjectDataset(tmp_path)
    assert ds.source == "instance_trainids" and len(ds) == 2 and ds.num_classes == 81
    assert ds.class_names[:2] == ["background", "person"] and ds.class_names[80] == "toothbrush"
    assert ds.class_names[12] == "stop sign"
    sample = ds[0]
    assert np.array_equal(sample["label"], OBJECT_LABEL) and sample["label"].dtype == np.int64
    assert sample["label_path"].endswith("000000000139_instanceTrainIds.png")


def test_raw_maps_convert_like_the_converter(tmp_path):
    write_png_layout(tmp_path, formats=("raw",))
    ds = DATASETS.build({"type": "coco_object", "root": str(tmp_path / "coco_stuff164k")})
    assert ds.source == "stuffthingmaps"
    assert np.array_equal(ds[1]["label"], OBJECT_LABEL)
    # beside mmseg's Stuff labels the raw maps are still the ones read
    write_png_layout(tmp_path, formats=("raw",))
    coco = tmp_path / "coco_stuff164k"
    Image.fromarray(RAW_LABEL).save(coco / "annotations/val2017/000000000139_labelTrainIds.png")
    assert np.array_equal(COCOObjectDataset(tmp_path)[0]["label"], OBJECT_LABEL)


def test_instances_json_is_rasterised_with_background_zero(tmp_path):
    write_instances(tmp_path)
    ds = COCOObjectDataset(tmp_path / "coco")
    assert ds.source == "instances" and len(ds) == 2
    assert ds.class_names[17] == "dog"  # COCO category id 18
    first = ds[0]
    label = first["label"]
    assert label.shape == (20, 24) and label.dtype == np.int64
    assert first["image_path"].endswith("val2017/000000000139.jpg")
    assert "instances_val2017.json" in first["label_path"]
    assert set(np.unique(label).tolist()) == {0, 1, 17}
    assert label[0, 0] == 0 and label[4, 4] == 1 and label[10, 12] == 17  # dog on top
    assert label[18, 20] == 0
    assert (ds[1]["label"] == 0).all()  # an image without annotations is all background


def test_instances_with_unknown_categories_or_unlisted_images(tmp_path):
    write_instances(tmp_path, categories=(1, 12))  # 12 is not a COCO thing category
    with pytest.raises(DatasetError, match="category ids 12"):
        COCOObjectDataset(tmp_path / "coco", source="instances")
    write_instances(tmp_path, extra_image=True)
    with pytest.raises(DatasetError, match="000000000999") as info:
        COCOObjectDataset(tmp_path / "coco")
    assert "not in" in str(info.value)


def test_instances_image_missing(tmp_path):
    coco = write_instances(tmp_path)
    (coco / "val2017/000000000285.jpg").unlink()
    with pytest.raises(DatasetError, match="000000000285"):
        COCOObjectDataset(coco)


def test_no_labels_at_all(tmp_path):
    coco = write_png_layout(tmp_path, formats=())
    with pytest.raises(DatasetError) as info:
        COCOObjectDataset(coco)
    message = str(info.value)
    assert "_instanceTrainIds.png" in message and "instances_val2017.json" in message
    assert "datasets/README.md" in message


def test_unpaired_png_labels(tmp_path):
    coco = write_png_layout(tmp_path)
    (coco / "annotations/val2017/000000000285_instanceTrainIds.png").unlink()
    with pytest.raises(DatasetError, match="000000000285"):
        COCOObjectDataset(tmp_path)
