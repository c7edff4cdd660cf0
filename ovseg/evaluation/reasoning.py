"""Reasoning-segmentation metrics as LISA and READ report them: gIoU and cIoU.

One sample is one query (a question about an image) with a predicted and a ground-truth
``(H, W)`` mask, and optionally an ``ignore`` mask (ReasonSeg's 255 regions). LISA's
``intersectionAndUnionGPU`` with ``ignore_index=255`` is followed:

* pixels under ``ignore`` count neither in the intersection ``I`` nor in the union ``U``;
* per query, ``IoU = I / (U + eps)`` with ``eps = 1e-5``; a query whose union is empty (empty
  target and empty prediction) scores 1 (LISA's "no-object target" rule);
* **gIoU** is the mean of the per-query IoUs, **cIoU** is ``sum(I) / (sum(U) + 1e-10)``.

Both are in percent. A query for which the model wrote no ``[SEG]`` has an empty prediction:
IoU 0 when its target is not empty, and the target's pixels add to ``sum(U)``; several
``[SEG]`` masks of one query are united first. (LISA and READ validate with teacher forcing,
where every query has exactly one ``[SEG]``; with generation, these two rules are ours.) The
share of queries answered without ``[SEG]`` is reported as ``no_seg``.

Per-query counts are kept so that states from several processes merge exactly (integer counts,
an exactly rounded IoU sum): the result does not depend on how the queries were split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ovseg.errors import EvaluationError

LISA_EPS = 1e-5
CIOU_EPS = 1e-10
STATE_KEYS = ("intersection", "union", "iou", "no_seg")


def _bool_mask(mask: Any, what: str) -> np.ndarray:
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise EvaluationError(f"{what} must be an (H, W) mask, got shape {arr.shape}.")
    if arr.dtype != np.bool_:
        if not np.isin(np.unique(arr), (0, 1)).all():
            raise EvaluationError(f"{what} must hold 0/1 or bool values; threshold scores first.")
        arr = arr.astype(bool)
    return arr


def query_intersection_union(pred: Any, gt: Any, ignore: Any = None) -> tuple[int, int]:
    """``(I, U)`` pixel counts of one query's ``(H, W)`` masks, ignored pixels left out."""
    p, g = _bool_mask(pred, "pred"), _bool_mask(gt, "gt")
    if p.shape != g.shape:
        raise EvaluationError(
            f"Prediction shape {p.shape} does not match the ground truth {g.shape}; resize the "
            "predicted mask to the image size first."
        )
    if ignore is not None:
        keep = ~_bool_mask(ignore, "ignore")
        if keep.shape != g.shape:
            raise EvaluationError(f"ignore mask shape {keep.shape} differs from {g.shape}.")
        p, g = p & keep, g & keep
    return int((p & g).sum()), int((p | g).sum())


def query_iou(intersection: int, union: int, eps: float = LISA_EPS) -> float:
    """LISA's per-query IoU: ``I / (U + eps)``, and 1 when ``U == 0``."""
    return 1.0 if union == 0 else intersection / (union + eps)


class ReasoningMetric:
    """Accumulates queries; :meth:`compute` gives gIoU, cIoU (percent) and counts.

    ``eps``: LISA's 1e-5 in the per-query IoU (0 gives the exact ratio).
    """

    def __init__(self, eps: float = LISA_EPS) -> None:
        self.eps = float(eps)
        self.reset()

    def reset(self) -> None:
        self._samples: dict[str, list] = {k: [] for k in STATE_KEYS}

    def __len__(self) -> int:
        return len(self._samples["iou"])

    def process(self, pred: Any, gt: Any, ignore: Any = None, *, no_seg: bool = False) -> float:
        """Add one query; returns its IoU. ``no_seg``: the answer held no ``[SEG]`` (``pred``
        is then the empty mask)."""
        intersection, union = query_intersection_union(pred, gt, ignore)
        iou = query_iou(intersection, union, self.eps)
        for key, value in zip(STATE_KEYS, (intersection, union, iou, bool(no_seg))):
            self._samples[key].append(value)
        return iou

    def state(self) -> dict[str, Any]:
        return {**{k: list(v) for k, v in self._samples.items()}, "eps": self.eps}

    def merge(self, state: Mapping[str, Any]) -> None:
        """Append the queries of a :meth:`state` dict."""
        if float(state.get("eps", self.eps)) != self.eps:
            raise EvaluationError("Cannot merge reasoning metrics computed with different eps.")
        if len({len(state[k]) for k in STATE_KEYS}) != 1:
            raise EvaluationError("A reasoning-metric state must hold lists of equal length.")
        for key in STATE_KEYS:
            self._samples[key].extend(state[key])

    def compute(self) -> dict[str, Any]:
        """``{"gIoU", "cIoU", "no_seg": percent (NaN with no query), "num_samples": int}``."""
        n = len(self)
        if n == 0:
            return {"gIoU": math.nan, "cIoU": math.nan, "no_seg": math.nan, "num_samples": 0}
        inter = int(np.sum(self._samples["intersection"]))
        union = int(np.sum(self._samples["union"]))
        return {
            "gIoU": math.fsum(self._samples["iou"]) / n * 100.0,
            "cIoU": inter / (union + CIOU_EPS) * 100.0,
            "no_seg": sum(self._samples["no_seg"]) / n * 100.0,
            "num_samples": n,
        }
