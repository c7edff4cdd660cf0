"""CVAT for images 1.1 XML read back with a small parser (masks) and pycocotools (polygons)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ovseg.export import create_exporter

from .conftest import CLASSES, H, W, filled, iou, scene_masks


def parse_cvat_mask(element: ET.Element, height: int, width: int) -> np.ndarray:
    """CVAT's mask code: runs alternate from background, row-major over the box."""
    left, top, box_w = (int(element.get(k)) for k in ("left", "top", "width"))
    mask = np.zeros((height, width), bool)
    value, offset = False, 0
    for run in (int(v) for v in element.get("rle").split(",")):
        for position in range(offset, offset + run):
            y, x = divmod(position, box_w)
            mask[top + y, left + x] = value
        offset += run
        value = not value
    return mask


def parse_cvat_polygon(element: ET.Element, height: int, width: int) -> np.ndarray:
    points = [float(v) for pair in element.get("points").split(";") for v in pair.split(",")]
    return mask_utils.decode(mask_utils.frPyObjects([points], height, width))[..., 0].astype(bool)


def _export(tmp_path, results, **options):
    exporter = create_exporter("cvat", **options)
    exporter.start(tmp_path / "cvat", CLASSES)
    for name, result in results:
        exporter.add(name, (H, W), result)
    summary = exporter.finish()
    return ET.parse(summary["path"]).getroot(), summary


def test_masks_are_exact_with_holes(tmp_path, instances, semantic):
    root, summary = _export(tmp_path, [("b/scene.png", instances), ("a.png", semantic)])
    assert root.findtext("version") == "1.1"
    labels = root.findall("meta/task/labels/label")
    assert [label.findtext("name") for label in labels] == CLASSES
    assert root.findtext("meta/task/size") == "2"
    images = root.findall("image")
    assert [i.get("name") for i in images] == ["a.png", "b/scene.png"]  # key order
    assert [(i.get("id"), i.get("width"), i.get("height")) for i in images][1] == (
        "1",
        str(W),
        str(H),
    )
    for image in images:
        masks = image.findall("mask")
        assert [m.get("label") for m in masks] == CLASSES
        for element, mask in zip(masks, scene_masks()):
            assert np.array_equal(parse_cvat_mask(element, H, W), mask)
    assert summary["annotations"] == 6


@pytest.mark.parametrize("tolerance", [0.0, 1.0])
def test_polygons_one_per_part(tmp_path, instances, tolerance):
    root, _ = _export(
        tmp_path, [("a.png", instances)], mask_format="polygon", polygon_tolerance=tolerance
    )
    polygons = root.find("image").findall("polygon")
    assert [p.get("label") for p in polygons] == ["ring", "pair", "pair", "disc"]
    by_label: dict[str, np.ndarray] = {}
    for element in polygons:
        mask = parse_cvat_polygon(element, H, W)
        by_label[element.get("label")] = by_label.get(element.get("label"), False) | mask
    for name, mask in zip(CLASSES, instances.masks):
        if tolerance == 0:
            assert np.array_equal(by_label[name], filled(mask))
        else:
            assert iou(by_label[name], filled(mask)) >= 0.98


def test_mask_touching_the_box_corner_starts_with_an_empty_run():
    from ovseg.export.cvat import cvat_rle_to_mask, mask_to_cvat_rle

    mask = np.zeros((6, 7), bool)
    mask[1, 2] = mask[3, 4] = True
    runs, box = mask_to_cvat_rle(mask)
    assert runs[0] == 0 and box == (2, 1, 3, 3) and sum(runs) == 9
    assert np.array_equal(cvat_rle_to_mask(runs, box, 6, 7), mask)
