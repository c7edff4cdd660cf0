"""Regions of each result type, and the checks every exporter makes."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.errors import ConfigError
from ovseg.export import create_exporter, parse_formats, regions_of
from ovseg.structures import PointPrompts, ReferringResult

from .conftest import CLASSES, H, W, scene_masks


def test_regions_of_each_result(instances, semantic):
    assert [r.name for r in regions_of(instances)] == CLASSES
    semantic.label_scores = np.where(semantic.sem_seg == 255, 0, 0.5).astype(np.float32)
    regions = regions_of(semantic)
    assert [r.name for r in regions] == CLASSES and [r.score for r in regions] == [0.5] * 3
    referring = ReferringResult(
        scene_masks()[1],
        0.75,
        "the two blocks",
        np.zeros((H, W), np.float32),
        PointPrompts(np.zeros((0, 2)), np.zeros(0)),
    )
    (region,) = regions_of(referring)
    assert region.name == "the two blocks" and region.score == 0.75
    instances.masks[1] = False  # an empty mask is not a region
    assert [r.name for r in regions_of(instances)] == ["ring", "disc"]
    with pytest.raises(ConfigError):
        regions_of("not a result")


def test_size_mismatch_and_format_names(tmp_path, instances):
    exporter = create_exporter("yolo")
    exporter.start(tmp_path / "y", CLASSES)
    with pytest.raises(ConfigError, match="mask is"):
        exporter.add("a.png", (H + 1, W), instances)
    assert parse_formats(" COCO, yolo,coco ") == ["coco", "yolo"]
    for bad in ("", "coco,voc"):
        with pytest.raises(ConfigError, match="--export takes"):
            parse_formats(bad)
