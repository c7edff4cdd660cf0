"""J&F and track AP on hand-made cases, checked against the formulas."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.errors import EvaluationError
from ovseg.evaluation.video import (
    VideoTrack,
    boundary_f,
    boundary_map,
    disk,
    j_and_f,
    jaccard,
    spatiotemporal_iou,
    track_ap,
)


def _square(y0, x0, side, size=(10, 10)):
    mask = np.zeros(size, dtype=bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


def test_jaccard_including_the_empty_case():
    a, b = _square(0, 0, 4), _square(0, 2, 4)  # 16 + 16 - 8 overlap
    assert jaccard(a, b) == pytest.approx(8 / 24)
    empty = np.zeros((10, 10), bool)
    assert jaccard(empty, empty) == 1.0 and jaccard(a, empty) == 0.0
    with pytest.raises(EvaluationError):
        jaccard(a, np.zeros((5, 5), bool))


def test_boundary_map_follows_seg2bmap():
    mask = _square(2, 2, 3, (6, 6))
    expected = np.zeros((6, 6), bool)
    # a pixel differs from its right, lower or lower-right neighbour
    expected[1, 1] = True  # (1,1)'s lower-right (2,2) is in the mask
    expected[1, 2:5] = True  # lower neighbour inside
    expected[2:5, 1] = True  # right neighbour inside
    expected[2:5, 4] = True  # inside, right neighbour outside
    expected[4, 2:5] = True  # inside, lower neighbour outside
    np.testing.assert_array_equal(boundary_map(mask), expected)
    edge = np.ones((3, 3), bool)  # a full mask: only the last row/column rules apply
    assert not boundary_map(edge).any()


def test_disk_matches_its_definition():
    np.testing.assert_array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert disk(2).sum() == 13


def test_boundary_f_cases():
    a = _square(2, 2, 4, (20, 20))
    assert boundary_f(a, a) == 1.0
    empty = np.zeros((20, 20), bool)
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(empty, a) == 0.0 and boundary_f(a, empty) == 0.0
    # diagonal 28.3 px -> radius ceil(0.226) = 1: a one-pixel shift stays within the tolerance
    assert boundary_f(_square(2, 3, 4, (20, 20)), a) == 1.0
    # a far shift: no boundary pixel within 1 px
    assert boundary_f(_square(12, 12, 4, (20, 20)), a) == 0.0
    # half of the predicted boundary matches -> P = 1/2 of its pixels, R likewise
    pred = _square(2, 2, 4, (20, 20)) | _square(12, 12, 4, (20, 20))
    b_pred, b_gt = boundary_map(pred).sum(), boundary_map(a).sum()
    precision, recall = boundary_map(a).sum() / b_pred, 1.0
    assert b_pred == 2 * b_gt
    assert boundary_f(pred, a) == pytest.approx(2 * precision * recall / (precision + recall))


def test_j_and_f_means_over_frames_then_objects():
    a = _square(0, 0, 4, (20, 20))
    b = _square(0, 2, 4, (20, 20))
    objects = {1: ([a, a, b], [a, a, a]), 2: ([a], [a])}
    result = j_and_f(objects)
    j1 = (1 + 1 + 8 / 24) / 3
    assert result["per_object"][1]["J"] == pytest.approx(j1)
    assert result["J"] == pytest.approx((j1 + 1) / 2)
    f1 = (1 + 1 + boundary_f(b, a)) / 3
    assert result["F"] == pytest.approx((f1 + 1) / 2)
    assert result["J&F"] == pytest.approx((result["J"] + result["F"]) / 2)
    trimmed = j_and_f({1: ([b, a, b], [a, a, a])}, skip_first_last=True)
    assert trimmed["J"] == 1.0
    with pytest.raises(EvaluationError):
        j_and_f({1: ([a], [a, a])})


def test_spatiotemporal_iou_sums_over_frames():
    a, b = _square(0, 0, 4), _square(0, 2, 4)
    pred = {0: a, 1: a}
    gt = {0: a, 1: b, 2: a}  # frame 2: the prediction is absent
    assert spatiotemporal_iou(pred, gt) == pytest.approx((16 + 8) / (16 + 24 + 16))
    assert spatiotemporal_iou({}, {}) == 0.0


def test_track_ap_hand_made():
    a, b = _square(0, 0, 4), _square(5, 5, 4)
    gt = [VideoTrack("v", 1, {0: a, 1: a}), VideoTrack("v", 1, {0: b, 1: b})]
    perfect = [VideoTrack("v", 1, {0: a, 1: a}, 0.9), VideoTrack("v", 1, {0: b, 1: b}, 0.8)]
    assert track_ap(perfect, gt)["mAP"] == pytest.approx(1.0)
    # a false positive ranked first, then the two true tracks: precision 1/2 at recall 1/2
    # (made monotone: 2/3 from the later point), 2/3 at recall 1
    fp = VideoTrack("v", 1, {0: _square(0, 6, 3), 1: _square(0, 6, 3)}, 0.95)
    result = track_ap([fp, *perfect], gt)
    assert result["AP50"] == pytest.approx(2 / 3)
    # a half-right track (IoU 1/2 over time) counts at 0.5 only: AP = 1/10 over thresholds
    half = [VideoTrack("v", 1, {0: a, 1: b}, 0.9)]
    one_gt = [VideoTrack("v", 1, {0: a, 1: a})]
    assert spatiotemporal_iou(half[0].masks, one_gt[0].masks) == pytest.approx(16 / 48)
    low = track_ap(half, one_gt)
    assert low["mAP"] == 0.0
    wrong_class = [VideoTrack("v", 2, {0: a, 1: a}, 0.9)]
    assert track_ap(wrong_class, one_gt)["mAP"] == 0.0
    # a track matching at IoU 0.6: AP 1 for thresholds 0.50 and 0.55 and 0.60, else 0
    c = _square(0, 0, 5)
    part = {0: a, 1: a}
    gt_c = [VideoTrack("v", 3, {0: c, 1: c})]
    iou = spatiotemporal_iou(part, gt_c[0].masks)
    assert iou == pytest.approx(32 / 50)
    assert track_ap([VideoTrack("v", 3, part, 0.5)], gt_c)["mAP"] == pytest.approx(3 / 10)
