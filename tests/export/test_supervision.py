"""Instances <-> supervision.Detections round trip."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from ovseg.errors import ConfigError
from ovseg.export.supervision import from_supervision, to_supervision

from .conftest import CLASSES


def test_round_trip_keeps_everything(instances):
    detections = to_supervision(instances)
    assert isinstance(detections, sv.Detections) and len(detections) == 3
    assert list(detections.data["class_name"]) == CLASSES
    assert np.array_equal(detections.mask, instances.masks)
    back = from_supervision(detections)
    assert back.class_names == CLASSES
    for field in ("masks", "boxes", "scores", "labels"):
        assert np.array_equal(getattr(back, field), getattr(instances, field))


def test_foreign_detections(instances):
    plain = sv.Detections(
        xyxy=instances.boxes,
        mask=instances.masks,
        class_id=np.array([2, 0, 2]),
        data={"class_name": np.array(["disc", "ring", "disc"])},
    )
    back = from_supervision(plain, class_names=["ring", "x", "disc"])
    assert back.labels.tolist() == [2, 0, 2] and back.scores.tolist() == [1.0, 1.0, 1.0]
    named = from_supervision(sv.Detections(xyxy=plain.xyxy, mask=plain.mask, data=plain.data))
    assert named.class_names == ["disc", "ring"] and named.labels.tolist() == [0, 1, 0]
    with pytest.raises(ConfigError, match="no masks"):
        from_supervision(sv.Detections(xyxy=instances.boxes))
    with pytest.raises(ConfigError, match="not in class_names"):
        from_supervision(plain, class_names=["ring"])
    with pytest.raises(ConfigError, match="Cannot name"):
        from_supervision(sv.Detections(xyxy=plain.xyxy, mask=plain.mask, class_id=np.zeros(3)))
