"""ReasoningMetric against LISA's validation arithmetic (histc-based intersection / union)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ovseg.errors import EvaluationError
from ovseg.evaluation.reasoning import ReasoningMetric, query_intersection_union, query_iou


def _lisa_reference(preds, labels):
    """LISA's validate(): histc intersection / union of class 1, ignore 255, 1e-5 and the
    no-object rule; returns (gIoU, cIoU) as fractions."""
    inter_sum = union_sum = 0.0
    acc = []
    for pred, label in zip(preds, labels):
        output = torch.as_tensor(pred.astype(np.int64)).view(-1).float()
        target = torch.as_tensor(label.astype(np.int64)).view(-1).float()
        output[target == 255] = 255
        hit = output[output == target]
        area_i = torch.histc(hit, bins=2, min=0, max=1)
        area_u = (
            torch.histc(output, bins=2, min=0, max=1)
            + torch.histc(target, bins=2, min=0, max=1)
            - area_i
        )
        iou = area_i / (area_u + 1e-5)
        iou[area_u == 0] += 1.0
        acc.append(float(iou[1]))
        inter_sum += float(area_i[1])
        union_sum += float(area_u[1])
    return sum(acc) / len(acc), inter_sum / (union_sum + 1e-10)


def test_matches_lisa_on_random_queries_with_ignore_and_empty_cases():
    rng = np.random.default_rng(0)
    preds, labels = [], []
    for i in range(12):
        label = (rng.random((9, 11)) < 0.3).astype(np.uint8)
        label[rng.random((9, 11)) < 0.15] = 255
        pred = rng.random((9, 11)) < 0.35
        if i == 3:  # empty target, empty prediction: the no-object rule
            label[:] = 0
            pred[:] = False
        if i == 4:  # empty target, something predicted
            label[label == 1] = 0
        preds.append(pred)
        labels.append(label)
    metric = ReasoningMetric()
    for pred, label in zip(preds, labels):
        metric.process(pred, label == 1, label == 255)
    giou, ciou = _lisa_reference(preds, labels)
    result = metric.compute()
    assert result["gIoU"] == pytest.approx(giou * 100, rel=1e-6)
    assert result["cIoU"] == pytest.approx(ciou * 100, rel=1e-6)
    assert result["num_samples"] == 12 and result["no_seg"] == 0


def test_per_query_rules():
    gt = np.zeros((4, 4), bool)
    gt[:2] = True
    ignore = np.zeros((4, 4), bool)
    ignore[:, 3] = True
    pred = np.zeros((4, 4), bool)
    pred[1:3] = True
    # ignored column removed from both: I = 3, U = 9
    assert query_intersection_union(pred, gt, ignore) == (3, 9)
    assert query_intersection_union(pred, gt) == (4, 12)
    assert query_iou(0, 0) == 1.0
    assert query_iou(3, 9) == pytest.approx(3 / (9 + 1e-5))
    assert query_iou(3, 9, eps=0) == 3 / 9
    with pytest.raises(EvaluationError, match="resize"):
        query_intersection_union(pred[:3], gt)
    with pytest.raises(EvaluationError, match="0/1"):
        query_intersection_union(pred * 0.5, gt)


def test_no_seg_answers_count_as_empty_predictions():
    metric = ReasoningMetric(eps=0.0)
    gt = np.ones((2, 2), bool)
    metric.process(np.zeros((2, 2), bool), gt, no_seg=True)
    metric.process(gt, gt)
    result = metric.compute()
    assert result["gIoU"] == 50.0 and result["cIoU"] == pytest.approx(50.0)
    assert result["no_seg"] == 50.0
    assert math.isnan(ReasoningMetric().compute()["gIoU"])


def test_merge_is_exact_and_checks_eps():
    rng = np.random.default_rng(1)
    pairs = [(rng.random((5, 5)) < 0.5, rng.random((5, 5)) < 0.5) for _ in range(7)]
    whole, a, b = ReasoningMetric(), ReasoningMetric(), ReasoningMetric()
    for i, (p, g) in enumerate(pairs):
        whole.process(p, g)
        (a if i % 2 else b).process(p, g)
    merged = ReasoningMetric()
    merged.merge(b.state())
    merged.merge(a.state())
    assert merged.compute() == whole.compute()
    with pytest.raises(EvaluationError, match="eps"):
        ReasoningMetric(eps=0).merge(a.state())
