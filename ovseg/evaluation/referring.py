"""Referring segmentation metrics: gIoU, cIoU and precision at IoU thresholds.

One sample is one (image, expression) pair with a predicted and a ground-truth ``(H, W)`` mask.
With ``I`` and ``U`` its intersection and union pixel counts:

* **gIoU** (LAVT's "mean IoU") is the mean over samples of the per-sample IoU;
* **cIoU** (LAVT's "overall IoU") is ``sum(I) / sum(U)`` over all samples;
* **Pr@t** is the share of samples whose IoU is at least ``t`` (t = 0.5, 0.6, 0.7, 0.8, 0.9,
  as the RefCOCO papers report).

All three are in percent. Empty masks follow one of two reference conventions
(``convention=``):

``"gres"`` (default; GRES / ReLA's ``ReferEvaluator`` for gRefCOCO, where an expression may
refer to nothing). A sample whose ground truth is empty is a *no-target* sample:

* ground truth and prediction both empty: IoU 1; adds nothing to ``sum(I)`` / ``sum(U)``;
* ground truth empty, prediction not: IoU 0; its predicted pixels add to ``sum(U)``;
* ground truth not empty: IoU = I / U as usual (an empty prediction gives 0);
* Pr@t counts only samples with a target (non-empty ground truth);
* also reported: **N-acc**, the share of no-target samples predicted empty, and **T-acc**,
  the share of target samples predicted non-empty (NaN when there are no such samples).

``"lavt"`` (LAVT's ``test.py``, followed by most RefCOCO code): IoU = I / U, and 0 when
``U == 0`` (both masks empty); Pr@t counts every sample.

On RefCOCO / RefCOCO+ / RefCOCOg every expression has a target, and then both conventions give
identical numbers. cIoU is the same under both. A value with nothing to average (no samples,
or ``sum(U) == 0``) is NaN.

Per-sample intersections, unions and IoUs are kept, so accumulators from several processes merge
exactly: counts are integers and the IoU mean is an exactly rounded sum (``math.fsum``), so the
result does not depend on how the samples were split or ordered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ovseg.engine.dist import all_gather_object
from ovseg.errors import ConfigError
from ovseg.structures import ReferringResult

PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
CONVENTIONS = ("gres", "lavt")
STATE_KEYS = ("intersection", "union", "pred_area", "gt_area", "iou")


def _as_bool_mask(mask: Any, what: str) -> np.ndarray:
    """A ``(H, W)`` bool numpy array from a numpy array, torch tensor or ReferringResult."""
    if isinstance(mask, ReferringResult):
        mask = mask.mask
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be an (H, W) mask, got shape {arr.shape}.")
    if arr.dtype != np.bool_:
        values = np.unique(arr)
        if not np.isin(values, (0, 1)).all():
            raise TypeError(
                f"{what} must be a bool or 0/1 mask, got values such as {values[:5].tolist()}; "
                "threshold the scores first."
            )
        arr = arr.astype(bool)
    return arr


def mask_intersection_union(pred: Any, gt: Any) -> tuple[int, int]:
    """``(I, U)`` pixel counts of two ``(H, W)`` bool (or 0/1) masks of the same shape."""
    p = _as_bool_mask(pred, "pred")
    g = _as_bool_mask(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(
            f"Prediction shape {p.shape} does not match ground-truth shape {g.shape}; resize "
            "the predicted mask to the image size before evaluating."
        )
    return int(np.logical_and(p, g).sum()), int(np.logical_or(p, g).sum())


def sample_iou(intersection: int, union: int, convention: str = "gres") -> float:
    """One sample's IoU: ``I / U``; when both masks are empty (``U == 0``) 1 under "gres", 0
    under "lavt". (A no-target sample with a non-empty prediction has ``I == 0``: IoU 0.)"""
    if union == 0:
        return 1.0 if convention == "gres" else 0.0
    return intersection / union


class ReferringMetric:
    """Accumulates referring-segmentation samples; ``compute`` gives gIoU, cIoU and Pr@t.

    Args:
        thresholds: IoU thresholds of the precision columns.
        convention: "gres" or "lavt": how empty masks count (see the module docstring).

    Usage::

        metric = ReferringMetric()
        metric.process(pred_mask, gt_mask)     # once per (image, expression)
        metric.all_gather()                    # under torch.distributed, once
        results = metric.compute()             # {"gIoU", "cIoU", "Pr@0.5", ..., "num_samples"}
    """

    def __init__(
        self, thresholds: Sequence[float] = PRECISION_THRESHOLDS, convention: str = "gres"
    ) -> None:
        if convention not in CONVENTIONS:
            raise ConfigError(f"convention must be one of {CONVENTIONS}, got {convention!r}.")
        thresholds = [float(t) for t in thresholds]
        if not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ConfigError(f"IoU thresholds must lie in [0, 1], got {thresholds}.")
        self.thresholds = thresholds
        self.convention = convention
        self.reset()

    def reset(self) -> None:
        """Forget every sample."""
        self._samples: dict[str, list] = {k: [] for k in STATE_KEYS}
        self._gathered = False

    def __len__(self) -> int:
        return len(self._samples["iou"])

    def process(self, pred: Any, gt: Any) -> float:
        """Add one sample and return its IoU (a fraction).

        Args:
            pred: ``(H, W)`` predicted mask: bool / 0-1 numpy array, torch tensor, or a
                ``ReferringResult`` (its ``mask``).
            gt: ``(H, W)`` ground-truth mask of the same shape.

        Raises:
            ValueError: the shapes differ. TypeError: a mask holds values other than 0 / 1.
        """
        p = _as_bool_mask(pred, "pred")
        g = _as_bool_mask(gt, "gt")
        intersection, union = mask_intersection_union(p, g)
        gt_area = int(g.sum())
        iou = sample_iou(intersection, union, self.convention)
        for key, value in zip(STATE_KEYS, (intersection, union, int(p.sum()), gt_area, iou)):
            self._samples[key].append(value)
        return iou

    def state(self) -> dict[str, Any]:
        """A copy of the per-sample records (lists of equal length) and the settings."""
        return {
            **{k: list(v) for k, v in self._samples.items()},
            "thresholds": list(self.thresholds),
            "convention": self.convention,
        }

    def merge(self, other: ReferringMetric | Mapping[str, Any]) -> None:
        """Append the samples of another metric (or of a ``state()`` dict) to this one."""
        state = other.state() if isinstance(other, ReferringMetric) else other
        if state.get("convention", self.convention) != self.convention:
            raise ValueError(
                f"Cannot merge samples scored with convention {state['convention']!r} into a "
                f"metric using {self.convention!r}; use one convention everywhere."
            )
        lengths = {len(state[k]) for k in STATE_KEYS}
        if len(lengths) != 1:
            raise ValueError("A referring-metric state must hold lists of equal length.")
        for key in STATE_KEYS:
            self._samples[key].extend(state[key])

    def all_gather(self) -> None:
        """Collect every torch.distributed rank's samples on every rank (no-op without one).

        Samples end in rank order. Call once, after every rank has processed its share; a
        second call would count samples twice, so that raises RuntimeError.
        """
        if self._gathered:
            raise RuntimeError(
                "ReferringMetric.all_gather() was already called; call reset() before reusing it."
            )
        states = all_gather_object(self.state())
        if len(states) > 1:
            self.reset()
            for state in states:
                self.merge(state)
        self._gathered = True

    def compute(self) -> dict[str, Any]:
        """Metrics over the samples so far, in percent (see the module docstring).

        Returns:
            ``{"gIoU", "cIoU", "Pr@0.5", ... (one per threshold), "N-acc", "T-acc": float,
            "num_samples", "num_no_target": int}``; NaN where nothing is averaged.
        """
        s = {k: np.asarray(v) for k, v in self._samples.items()}
        n = len(self)
        has_target = s["gt_area"] > 0 if n else np.zeros(0, dtype=bool)
        pred_empty = s["pred_area"] == 0 if n else np.zeros(0, dtype=bool)
        ious = s["iou"].astype(np.float64) if n else np.zeros(0)
        total_union = int(s["union"].sum()) if n else 0
        results: dict[str, Any] = {
            "gIoU": math.fsum(ious.tolist()) / n * 100.0 if n else float("nan"),
            "cIoU": int(s["intersection"].sum()) / total_union * 100.0
            if total_union
            else float("nan"),
        }
        counted = has_target if self.convention == "gres" else np.ones(n, dtype=bool)
        for t in self.thresholds:
            hits = int((ious[counted] >= t).sum())
            results[f"Pr@{t:g}"] = (
                hits / int(counted.sum()) * 100.0 if counted.any() else float("nan")
            )
        no_target = ~has_target
        results["N-acc"] = (
            float((pred_empty & no_target).sum()) / no_target.sum() * 100.0
            if no_target.any()
            else float("nan")
        )
        results["T-acc"] = (
            float((~pred_empty & has_target).sum()) / has_target.sum() * 100.0
            if has_target.any()
            else float("nan")
        )
        results["num_samples"] = n
        results["num_no_target"] = int(no_target.sum())
        return results
