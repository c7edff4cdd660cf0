"""YOLO segmentation export read back by a small parser (cv2.fillPoly, as Ultralytics draws)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from ovseg.export import create_exporter

from .conftest import CLASSES, H, W, filled, iou


def read_yolo_masks(path, height, width, num_classes) -> tuple[np.ndarray, list[int]]:
    """Per class the union of its polygons, and the class of each line."""
    masks = np.zeros((num_classes, height, width), np.uint8)
    classes = []
    for line in path.read_text().splitlines():
        values = line.split()
        label = int(values[0])
        points = np.array(values[1:], dtype=np.float64).reshape(-1, 2) * (width, height)
        cv2.fillPoly(masks[label], [np.round(points).astype(np.int32)], 1)
        classes.append(label)
    return masks.astype(bool), classes


@pytest.mark.parametrize("tolerance", [0.0, 1.0])
def test_labels_and_data_yaml(tmp_path, instances, tolerance):
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(source / "sub" / "scene.png")
    exporter = create_exporter("yolo", polygon_tolerance=tolerance)
    exporter.start(tmp_path / "yolo", CLASSES, source_root=source)
    exporter.add("sub/scene.png", (H, W), instances)
    summary = exporter.finish()
    root = tmp_path / "yolo"
    data = yaml.safe_load((root / "data.yaml").read_text())
    assert data["nc"] == 3 and data["names"] == dict(enumerate(CLASSES))
    assert data["path"] == str(root.resolve()) and data["train"] == data["val"] == "images"
    assert (root / "images" / "sub" / "scene.png").is_file() and summary["images"] == 1
    masks, classes = read_yolo_masks(root / "labels" / "sub" / "scene.txt", H, W, 3)
    assert classes == [0, 1, 1, 2]  # the two-part mask has one line per part
    for back, mask in zip(masks, instances.masks):
        if tolerance == 0:  # exact but for the hole, which YOLO cannot hold
            assert np.array_equal(back, filled(mask))
        else:
            assert iou(back, filled(mask)) >= 0.98
    for line in (root / "labels" / "sub" / "scene.txt").read_text().splitlines():
        coords = np.array(line.split()[1:], float)
        assert coords.min() >= 0 and coords.max() <= 1


def test_image_without_regions_gets_an_empty_label_file(tmp_path, semantic):
    semantic.sem_seg[:] = 255
    exporter = create_exporter("yolo")
    exporter.start(tmp_path / "yolo", CLASSES)
    exporter.add("a.jpg", (H, W), semantic)
    exporter.finish()
    assert (tmp_path / "yolo" / "labels" / "a.txt").read_text() == ""
    assert exporter.has("a") and not exporter.has("b")
