"""COCO export read back with pycocotools and ovseg's COCO reader."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from ovseg.data.coco_instances import COCOInstances
from ovseg.errors import ConfigError
from ovseg.export import create_exporter

from .conftest import CLASSES, H, W, filled, iou, scene_masks


def _load(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _export(tmp_path, result, **options):
    exporter = create_exporter("coco", **options)
    exporter.start(tmp_path / "coco", CLASSES)
    exporter.add("sub/scene.png", (H, W), result)
    summary = exporter.finish()
    return _load(summary["path"]), summary


def test_rle_masks_come_back_exactly(tmp_path, instances):
    coco, summary = _export(tmp_path, instances)
    assert summary["images"] == 1 and summary["annotations"] == 3
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASSES
    assert coco.getCatIds() == [1, 2, 3]
    (image,) = coco.loadImgs(coco.getImgIds())
    assert (image["file_name"], image["height"], image["width"]) == ("sub/scene.png", H, W)
    anns = coco.loadAnns(coco.getAnnIds())
    for ann, mask, box, score in zip(anns, instances.masks, instances.boxes, instances.scores):
        assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
        assert ann["area"] == int(mask.sum()) and ann["iscrowd"] == 0
        x1, y1, x2, y2 = box.tolist()
        assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
        assert ann["score"] == pytest.approx(float(score), abs=1e-6)
        assert ann["category_id"] == CLASSES.index(instances.class_names[0]) + 1 + anns.index(ann)


@pytest.mark.parametrize("tolerance", [0.0, 1.0])
def test_polygons_fill_the_holes_and_keep_the_parts(tmp_path, instances, tolerance):
    coco, _ = _export(tmp_path, instances, mask_format="polygon", polygon_tolerance=tolerance)
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns[1]["segmentation"]) == 2  # the two-part mask: two polygons
    for ann, mask in zip(anns, instances.masks):
        back = coco.annToMask(ann).astype(bool)
        if tolerance == 0:
            assert np.array_equal(back, filled(mask))
        else:  # approxPolyDP cuts chords up to 1 px inside; see conftest for the sizes
            assert iou(back, filled(mask)) >= 0.98


def test_semantic_map_is_one_annotation_per_class(tmp_path, semantic):
    coco, _ = _export(tmp_path, semantic)
    anns = coco.loadAnns(coco.getAnnIds())
    assert [a["category_id"] for a in anns] == [1, 2, 3]
    for ann, mask in zip(anns, scene_masks()):
        assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
        assert "score" not in ann  # no probabilities in this result


def test_ovseg_reader_loads_the_export(tmp_path, instances):
    images = tmp_path / "images" / "sub"
    images.mkdir(parents=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(images / "scene.png")
    _, summary = _export(tmp_path, instances)
    dataset = COCOInstances(ann_file=summary["path"], img_dir=tmp_path / "images")
    assert dataset.class_names == CLASSES
    sample = dataset[0]
    assert np.array_equal(sample["instances"]["masks"], instances.masks)
    assert np.array_equal(sample["instances"]["boxes"], instances.boxes)


def test_new_class_names_are_appended_and_options_checked(tmp_path, instances):
    exporter = create_exporter("coco")
    exporter.start(tmp_path / "coco", ["disc"])
    exporter.add("a.png", (H, W), instances)
    data = json.loads(open(exporter.finish()["path"]).read())
    assert [c["name"] for c in data["categories"]] == ["disc", "ring", "pair"]
    assert [a["category_id"] for a in data["annotations"]] == [2, 3, 1]
    with pytest.raises(ConfigError):
        create_exporter("coco", mask_format="bitmap")
    with pytest.raises(ConfigError):
        create_exporter("coco", polygon_tolerance=-1)
    with pytest.raises(ConfigError):
        create_exporter("coco").add("a.png", (H, W), instances)
