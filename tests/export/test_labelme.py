"""labelme export read back as labelme draws shapes (PIL ImageDraw.polygon, outline included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ovseg.export import create_exporter

from .conftest import CLASSES, H, W, filled, iou


def shape_to_mask(points, height, width) -> np.ndarray:
    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).polygon([tuple(p) for p in points], outline=1, fill=1)
    return np.array(image, dtype=bool)


@pytest.mark.parametrize("tolerance", [0.0, 1.0])
def test_shapes_come_back(tmp_path, instances, tolerance):
    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(source / "scene.jpg")
    exporter = create_exporter("labelme", polygon_tolerance=tolerance)
    exporter.start(tmp_path / "labelme", CLASSES, source_root=source)
    exporter.add("scene.jpg", (H, W), instances, key="deep/scene")
    exporter.finish()
    document = json.loads((tmp_path / "labelme" / "deep" / "scene.json").read_text())
    assert (document["imageHeight"], document["imageWidth"]) == (H, W)
    image_path = tmp_path / "labelme" / "deep" / document["imagePath"]
    assert image_path.resolve() == (source / "scene.jpg").resolve()
    assert document["version"] and document["imageData"] is None
    shapes = document["shapes"]
    assert [s["label"] for s in shapes] == ["ring", "pair", "pair", "disc"]
    assert [s["group_id"] for s in shapes] == [0, 1, 1, 2]
    assert {s["shape_type"] for s in shapes} == {"polygon"}
    for group, mask in enumerate(instances.masks):
        back = np.zeros((H, W), bool)
        for shape in shapes:
            if shape["group_id"] == group:
                back |= shape_to_mask(shape["points"], H, W)
        if tolerance == 0:  # exact but for the hole, which labelme polygons cannot hold
            assert np.array_equal(back, filled(mask))
        else:
            assert iou(back, filled(mask)) >= 0.98
    labels = (tmp_path / "labelme" / "labels.txt").read_text().split("\n")
    assert labels[:3] == CLASSES
