"""Referring metrics: gIoU, cIoU, Pr@t on hand-made masks; empty-mask conventions; merging."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ovseg.errors import ConfigError
from ovseg.evaluation.referring import (
    ReferringMetric,
    mask_intersection_union,
    sample_iou,
)
from ovseg.registry import EVALUATORS
from ovseg.structures import PointPrompts, ReferringResult
from tests.torchrun import run_torchrun


def _box(rows: slice, cols: slice, shape=(4, 4)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


EMPTY = np.zeros((4, 4), dtype=bool)
# (pred, gt): A: I 4, U 6; B: I 4, U 14; C: I 8, U 8
TARGETED = [
    (_box(slice(0, 2), slice(0, 3)), _box(slice(0, 2), slice(0, 2))),
    (_box(slice(1, 4), slice(1, 4)), _box(slice(0, 3), slice(0, 3))),
    (_box(slice(0, 2), slice(0, 4)), _box(slice(0, 2), slice(0, 4))),
]
# D: nothing referred to, nothing predicted; E: nothing referred to, 3 pixels predicted
NO_TARGET = [(EMPTY, EMPTY), (_box(slice(3, 4), slice(0, 3)), EMPTY)]


def _metric(samples, **kwargs) -> ReferringMetric:
    metric = ReferringMetric(**kwargs)
    for pred, gt in samples:
        metric.process(pred, gt)
    return metric


def test_intersection_union_by_hand() -> None:
    assert [mask_intersection_union(p, g) for p, g in TARGETED] == [(4, 6), (4, 14), (8, 8)]
    assert mask_intersection_union(*NO_TARGET[1]) == (0, 3)
    assert sample_iou(0, 0, "gres") == 1.0 and sample_iou(0, 0, "lavt") == 0.0
    assert sample_iou(4, 14) == pytest.approx(2 / 7)


def test_targeted_samples_by_hand() -> None:
    metric = _metric(TARGETED)
    results = metric.compute()
    assert results["gIoU"] == pytest.approx((2 / 3 + 2 / 7 + 1) / 3 * 100)
    assert results["cIoU"] == pytest.approx(16 / 28 * 100)
    assert results["Pr@0.5"] == pytest.approx(200 / 3)
    assert results["Pr@0.6"] == pytest.approx(200 / 3)
    for t in ("0.7", "0.8", "0.9"):
        assert results[f"Pr@{t}"] == pytest.approx(100 / 3)
    assert results["num_samples"] == 3 and results["num_no_target"] == 0
    assert math.isnan(results["N-acc"]) and results["T-acc"] == 100.0
    # every expression has a target: both conventions agree
    assert _metric(TARGETED, convention="lavt").compute() == pytest.approx(results, nan_ok=True)


def test_gres_convention_for_no_target_samples() -> None:
    results = _metric(TARGETED + NO_TARGET).compute()
    # both empty: IoU 1, nothing added to I / U; predicted pixels without a target: IoU 0, U + 3
    assert results["gIoU"] == pytest.approx((2 / 3 + 2 / 7 + 1 + 1 + 0) / 5 * 100)
    assert results["cIoU"] == pytest.approx(16 / 31 * 100)
    assert results["Pr@0.5"] == pytest.approx(200 / 3)  # over the 3 targeted samples only
    assert results["N-acc"] == pytest.approx(50.0)
    assert results["T-acc"] == pytest.approx(100.0)
    assert results["num_no_target"] == 2


def test_lavt_convention_for_no_target_samples() -> None:
    results = _metric(TARGETED + NO_TARGET, convention="lavt").compute()
    assert results["gIoU"] == pytest.approx((2 / 3 + 2 / 7 + 1 + 0 + 0) / 5 * 100)
    assert results["cIoU"] == pytest.approx(16 / 31 * 100)
    assert results["Pr@0.5"] == pytest.approx(2 / 5 * 100)  # over every sample


def test_empty_prediction_for_a_target() -> None:
    metric = _metric([(EMPTY, _box(slice(0, 1), slice(0, 2)))] + TARGETED[2:])
    assert metric.compute()["T-acc"] == pytest.approx(50.0)
    assert metric.compute()["gIoU"] == pytest.approx(50.0)
    assert metric.compute()["cIoU"] == pytest.approx(8 / 10 * 100)


def test_threshold_is_inclusive() -> None:
    half = (_box(slice(0, 1), slice(0, 2)), _box(slice(0, 1), slice(0, 4)))  # IoU exactly 0.5
    results = _metric([half]).compute()
    assert results["Pr@0.5"] == 100.0 and results["Pr@0.6"] == 0.0


def test_inputs_tensors_results_and_checks() -> None:
    pred, gt = TARGETED[0]
    result = ReferringResult(
        pred, 0.9, "the cat", np.zeros((4, 4), np.float32), PointPrompts([], [])
    )
    metric = ReferringMetric()
    assert metric.process(result, torch.from_numpy(gt.astype(np.uint8))) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="does not match ground-truth shape"):
        metric.process(np.zeros((4, 5), bool), gt)
    with pytest.raises(TypeError, match="threshold the scores first"):
        metric.process(np.full((4, 4), 0.7), gt)
    with pytest.raises(ValueError, match=r"\(H, W\) mask"):
        metric.process(np.zeros((1, 4, 4), bool), gt)
    assert len(metric) == 1


def test_no_samples_gives_nan() -> None:
    results = ReferringMetric().compute()
    assert math.isnan(results["gIoU"]) and math.isnan(results["cIoU"])
    assert math.isnan(results["Pr@0.5"]) and results["num_samples"] == 0
    only_empty = _metric(NO_TARGET[:1]).compute()
    assert only_empty["gIoU"] == 100.0 and math.isnan(only_empty["cIoU"])


def test_merge_equals_one_accumulator() -> None:
    samples = TARGETED + NO_TARGET
    whole = _metric(samples).compute()
    first, second = _metric(samples[3:]), _metric(samples[:3])
    first.merge(second)
    first.merge(ReferringMetric().state())  # an empty state adds nothing
    assert first.compute() == whole  # exact, whatever the order
    with pytest.raises(ValueError, match="convention"):
        first.merge(_metric(samples, convention="lavt"))


def test_settings_are_checked_and_registered() -> None:
    from ovseg.evaluation.referring_evaluator import ReferringEvaluator

    # configs name the metric; the registry gives its dataset evaluator
    assert EVALUATORS.get("ReferringMetric") is ReferringEvaluator
    assert EVALUATORS.get("referring_iou") is ReferringEvaluator
    with pytest.raises(ConfigError, match="convention"):
        ReferringMetric(convention="mean")
    with pytest.raises(ConfigError, match="thresholds"):
        ReferringMetric(thresholds=[50])
    custom = _metric(TARGETED, thresholds=[0.25, 0.75]).compute()
    assert custom["Pr@0.25"] == 100.0 and custom["Pr@0.75"] == pytest.approx(100 / 3)


def test_all_gather_without_process_group_keeps_samples_and_refuses_twice() -> None:
    metric = _metric(TARGETED)
    metric.all_gather()
    assert len(metric) == 3
    with pytest.raises(RuntimeError, match="already called"):
        metric.all_gather()


WORKER = """
import json
import sys

import numpy as np
import torch.distributed as dist

from ovseg.evaluation.referring import ReferringMetric


def samples():
    rng = np.random.default_rng(0)
    out = []
    for i in range(7):
        gt = rng.random((6, 5)) < (0.0 if i == 3 else 0.4)
        pred = gt ^ (rng.random((6, 5)) < 0.2)
        out.append((pred, gt))
    return out


if __name__ == "__main__":
    dist.init_process_group("gloo")
    metric = ReferringMetric()
    for pred, gt in samples()[dist.get_rank() :: dist.get_world_size()]:
        metric.process(pred, gt)
    metric.all_gather()
    with open(f"{sys.argv[1]}.rank{dist.get_rank()}", "w") as handle:
        json.dump(metric.compute(), handle)
    dist.destroy_process_group()
"""


def test_two_process_torchrun_equals_one_process(tmp_path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    namespace: dict = {}
    exec(compile(WORKER.split('if __name__ == "__main__":')[0], "worker", "exec"), namespace)
    single = _metric(namespace["samples"]()).compute()

    out = tmp_path / "metrics"
    run_torchrun(script, out)
    for rank in (0, 1):
        gathered = json.loads(Path(f"{out}.rank{rank}").read_text())
        assert gathered["num_samples"] == 7 and gathered["num_no_target"] == 1
        assert gathered == json.loads(json.dumps(single))  # exactly, on every rank
