"""Mask-IoU matching and track bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.errors import ConfigError
from ovseg.inference.tracking import TrackManager, mask_iou_matrix, match_by_iou


def _box(x0, width=4, size=16):
    mask = np.zeros((size, size), dtype=bool)
    mask[4:8, x0 : x0 + width] = True
    return mask


def test_mask_iou_matrix():
    a = np.stack([_box(0), _box(8)])
    b = np.stack([_box(2), np.zeros((16, 16), bool)])
    np.testing.assert_allclose(mask_iou_matrix(a, b), [[8 / 24, 0], [0, 0]])


def test_hungarian_maximises_the_sum_greedy_takes_the_best_pair_first():
    iou = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert match_by_iou(iou, 0.5, "hungarian") == [(0, 1), (1, 0)]
    assert match_by_iou(iou, 0.5, "greedy") == [(0, 0)]
    assert match_by_iou(iou, 0.95, "hungarian") == []
    assert match_by_iou(np.zeros((0, 3)), 0.5) == []
    with pytest.raises(ConfigError):
        match_by_iou(iou, 0.5, "best")


def test_tracks_continue_start_and_end():
    manager = TrackManager(iou_threshold=0.3, patience=1)
    seen = manager.update(np.stack([_box(0)]), [0.9], [0])
    assert [t.id for t, _ in seen] == [1]
    seen = manager.update(np.stack([_box(1), _box(10)]), [0.8, 0.7], [0, 1])
    assert sorted((t.id, c) for t, c in seen) == [(1, 0), (2, 1)]
    # nothing detected: both miss once (patience 1 keeps them), then end
    assert manager.update(np.zeros((0, 16, 16), bool), [], []) == []
    assert [t.id for t in manager.tracks] == [1, 2]
    manager.update(np.zeros((0, 16, 16), bool), [], [])
    assert manager.tracks == []
    seen = manager.update(np.stack([_box(1)]), [0.9], [0])
    assert [t.id for t, _ in seen] == [3]  # ids are never reused
    class_aware = TrackManager(iou_threshold=0.3, class_aware=True)
    class_aware.update(np.stack([_box(0)]), [0.9], [0])
    assert [t.id for t, _ in class_aware.update(np.stack([_box(0)]), [0.9], [1])] == [2]
    for bad in ({"iou_threshold": 0}, {"matching": "x"}, {"patience": -1}):
        with pytest.raises(ConfigError):
            TrackManager(**bad)
