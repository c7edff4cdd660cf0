"""COCOInstances: layout, samples (polygons, compressed and uncompressed RLE), checks."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ovseg.data.coco_instances import COCOInstances, load_coco_instances, validate_coco_instances
from ovseg.data.coco_writer import mask_to_rle
from ovseg.data.synthetic import generate_scene, scene_rng
from ovseg.data.writers import write_synthetic_world
from ovseg.errors import DatasetError
from ovseg.fileio import atomic_write_bytes, encode_image
from ovseg.registry import DATASETS


def _mask(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: run lengths of the column-major pixels, starting with zeros."""
    flat = mask.T.reshape(-1).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], edges])).tolist()
    return {"size": list(mask.shape), "counts": counts}


SHAPE_A = (6, 8)  # image 10, (H, W)
POLYGON_MASK = _mask(SHAPE_A, slice(1, 3), slice(1, 4))
RLE_MASK = _mask(SHAPE_A, slice(4, 6), slice(5, 8))
CROWD_MASK = _mask(SHAPE_A, slice(0, 2), slice(6, 8))


def _document() -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "height": 6, "width": 8},
            {"id": 5, "file_name": "b.png", "height": 4, "width": 4},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {
                "id": 2,
                "image_id": 10,
                "category_id": 3,
                "segmentation": mask_to_rle(RLE_MASK),
                "area": 6.0,
                "bbox": [5, 4, 3, 2],
                "iscrowd": 0,
            },
            {
                "id": 1,
                "image_id": 10,
                "category_id": 7,
                "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]],
                "area": 6.0,
                "bbox": [1, 1, 3, 2],
                "iscrowd": 0,
            },
            {
                "id": 3,
                "image_id": 10,
                "category_id": 3,
                "segmentation": _uncompressed_rle(CROWD_MASK),
                "bbox": [6, 0, 2, 2],
                "iscrowd": 1,
            },
        ],
    }


def _write(root: Path, document: dict, split: str = "val2017") -> Path:
    for image in document["images"]:
        pixels = np.full((image["height"], image["width"], 3), 7, dtype=np.uint8)
        atomic_write_bytes(root / split / image["file_name"], encode_image(pixels, "PNG"))
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(document))
    return root


@pytest.fixture()
def coco_root(tmp_path) -> Path:
    return _write(tmp_path / "coco", _document())


def test_standard_layout_samples(coco_root) -> None:
    dataset = COCOInstances(coco_root)
    assert DATASETS.get("COCOInstances") is COCOInstances
    assert dataset.categories == {3: "cat", 7: "dog"}
    assert dataset.category_ids == [3, 7] and dataset.class_names == ["cat", "dog"]
    assert dataset.image_ids == [5, 10] and len(dataset) == 2
    assert dataset.dropped_polygons == 0

    empty = dataset[0]
    assert empty["image_id"] == 5 and empty["image"].shape == (4, 4, 3)
    assert empty["instances"]["masks"].shape == (0, 4, 4)
    assert empty["instances"]["boxes"].shape == (0, 4)

    sample = dataset[1]
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (6, 8, 3)
    assert sample["image_path"] == str(coco_root / "val2017" / "a.png")
    inst = sample["instances"]
    # annotation-id order: polygon (1), compressed RLE (2), uncompressed crowd RLE (3)
    np.testing.assert_array_equal(inst["masks"], np.stack([POLYGON_MASK, RLE_MASK, CROWD_MASK]))
    np.testing.assert_array_equal(
        inst["boxes"], [[1, 1, 4, 3], [5, 4, 8, 6], [6, 0, 8, 2]]
    )  # XYXY, x2/y2 exclusive
    assert inst["boxes"].dtype == np.float32
    np.testing.assert_array_equal(inst["category_ids"], [7, 3, 3])
    np.testing.assert_array_equal(inst["labels"], [1, 0, 0])
    np.testing.assert_array_equal(inst["iscrowd"], [False, False, True])
    # a missing area is filled with the mask area (COCOeval's area ranges need it)
    assert dataset.coco.anns[3]["area"] == CROWD_MASK.sum()


def test_explicit_paths_and_relative_to_root(coco_root) -> None:
    ann = coco_root / "annotations" / "instances_val2017.json"
    absolute = COCOInstances(ann_file=ann, img_dir=coco_root / "val2017")
    relative = COCOInstances(
        coco_root, ann_file="annotations/instances_val2017.json", img_dir="val2017"
    )
    assert absolute.image_ids == relative.image_ids == [5, 10]


def test_wrong_split_names_the_available_ones(coco_root) -> None:
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: pass split= one of"):
        COCOInstances(coco_root, split="val")
    with pytest.raises(DatasetError, match="Pass root="):
        COCOInstances(ann_file=coco_root / "annotations" / "instances_val2017.json")


def test_missing_image_file_is_listed(coco_root) -> None:
    (coco_root / "val2017" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 2 images .* b\.png"):
        COCOInstances(coco_root)


def test_image_size_differing_from_json_is_refused(tmp_path) -> None:
    document = _document()
    root = _write(tmp_path / "coco", document)
    document["images"][1]["height"] = 5  # b.png is 4 high
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(document))
    dataset = COCOInstances(root)
    with pytest.raises(DatasetError, match=r"b\.png is 4x4 but .* says 4x5"):
        dataset[0]


def _broken(change) -> dict:
    document = copy.deepcopy(_document())
    change(document)
    return document


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["images"].append(dict(d["images"][0])), r"duplicate image ids: 10"),
        (
            lambda d: d["annotations"].append(dict(d["annotations"][0])),
            r"duplicate annotation ids: 2",
        ),
        (
            lambda d: d["categories"].append({"id": 3, "name": "kitten"}),
            r"duplicate category ids: 3",
        ),
        (
            lambda d: d["annotations"][0].update(image_id=99),
            r"image_id is not an image of the file: 2",
        ),
        (
            lambda d: d["annotations"][1].update(category_id=4),
            r"category_id is not a category of the file: 1",
        ),
        (lambda d: d["annotations"][0].update(bbox=[5, 4, 0, 2]), r"empty or negative-size bbox"),
        (lambda d: d["annotations"][0].update(bbox=[5, 4, 3, -1]), r"empty or negative-size bbox"),
        (lambda d: d["annotations"][0].update(bbox=[5, 4, 3]), r"bbox' of 4 finite numbers"),
        (
            lambda d: d["annotations"][1].update(segmentation=[[1, 1, 4, 1, 4, 3, 1]]),
            r"odd number of coordinates \(7\)",
        ),
        (lambda d: d["annotations"][1].update(segmentation=[]), r"empty polygon list"),
        (
            lambda d: d["annotations"][0]["segmentation"].update(size=[8, 6]),
            r"RLE size \[8, 6\] differs from the image's \[6, 8\]",
        ),
        (
            lambda d: d["annotations"][2]["segmentation"]["counts"].append(3),
            r"counts sum to 51, not height\*width",
        ),
        (lambda d: d["annotations"][0].pop("segmentation"), r"without a 'segmentation'"),
        (lambda d: d["annotations"][0].update(iscrowd=2), r"'iscrowd' is not 0 or 1"),
        (lambda d: d["images"][0].update(height=0), r"positive 'height'/'width'"),
        (lambda d: d.pop("categories"), r"has no categories list"),
    ],
)
def test_invalid_documents_are_refused(change, message) -> None:
    with pytest.raises(DatasetError, match=message):
        validate_coco_instances(_broken(change), "test.json")


def test_every_problem_is_listed_at_once() -> None:
    def change(d):
        d["annotations"][0]["image_id"] = 99
        d["annotations"][1]["bbox"] = [0, 0, -1, 1]

    with pytest.raises(DatasetError) as info:
        validate_coco_instances(_broken(change), "test.json")
    text = str(info.value)
    assert "image_id is not an image" in text and "negative-size bbox" in text
    assert "test.json" in text and "Fix or remove" in text


def test_short_polygons_are_dropped_and_reported(tmp_path) -> None:
    def change(d):
        # annotation 1 keeps its rectangle and loses a 2-point polygon, which pycocotools
        # would otherwise read as a box
        d["annotations"][1]["segmentation"].append([0, 0, 7, 5])
        d["annotations"].append(
            {
                "id": 4,
                "image_id": 10,
                "category_id": 7,
                "segmentation": [[0, 0, 2, 2], [3, 3, 5, 5]],
                "bbox": [0, 0, 5, 5],
            }
        )

    root = _write(tmp_path / "coco", _broken(change))
    with pytest.warns(UserWarning, match=r"dropped 3 polygon\(s\) .* 1 annotation\(s\) .*ids 4"):
        dataset = COCOInstances(root)
    assert dataset.dropped_polygons == 3
    assert dataset.dropped_annotation_ids == [4]
    assert 4 not in dataset.coco.anns
    inst = dataset[1]["instances"]
    assert len(inst["masks"]) == 3
    np.testing.assert_array_equal(inst["masks"][0], POLYGON_MASK)


def test_clean_file_gives_no_warning(coco_root) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checked = load_coco_instances(coco_root / "annotations" / "instances_val2017.json")
    assert checked.dropped_polygons == 0 and checked.dropped_annotation_ids == []


def test_unreadable_json_is_a_dataset_error(tmp_path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="Cannot read"):
        load_coco_instances(path)


@pytest.mark.parametrize("segmentation", ["rle", "polygon"])
def test_synthetic_world_masks_and_boxes_match_the_scenes(tmp_path, segmentation) -> None:
    write_synthetic_world(
        tmp_path,
        num_train=0,
        num_val=2,
        seed=5,
        image_size=48,
        formats=("coco",),
        progress=False,
        coco_segmentation=segmentation,
    )
    dataset = COCOInstances(tmp_path / "coco", split="val")
    for index in range(2):
        scene = generate_scene(scene_rng(5, "val", index), image_size=48, split="val")
        sample = dataset[index]
        assert sample["image_id"] == index + 1
        inst = sample["instances"]
        np.testing.assert_array_equal(inst["masks"], scene.masks)
        np.testing.assert_array_equal(inst["boxes"], scene.boxes)
        np.testing.assert_array_equal(inst["labels"], scene.class_ids)
        areas = [dataset.coco.anns[a]["area"] for a in sorted(dataset.coco.getAnnIds(index + 1))]
        assert areas == [float(mask_utils.area(mask_to_rle(m))) for m in scene.masks]
