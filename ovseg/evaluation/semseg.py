"""Semantic segmentation metric: per-class intersection / union counts -> aAcc, mIoU, mAcc.

The counting follows mmsegmentation's ``IoUMetric`` so numbers are comparable with papers that
report it:

* pixels whose *label* equals ``ignore_index`` are dropped first (whatever was predicted there);
* each of the three histograms (intersection, predicted area, label area) only counts values in
  ``[0, num_classes)``; other values (e.g. a prediction of -1) fall out of that histogram only;
* ``union = pred_area + label_area - intersect``;
* ``IoU = intersect / union`` (NaN when the class is absent from both labels and predictions),
  ``Acc = intersect / label_area`` (NaN when the class is absent from the labels),
  ``aAcc = sum(intersect) / sum(label_area)``;
* the means (mIoU, mAcc and the per-group means) skip NaN classes, like ``np.nanmean``.

Counts are int64, so summing them over images, processes or ranks is exact and order-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ovseg.errors import ConfigError

COUNT_KEYS = ("intersect", "union", "pred_area", "label_area")


def _as_int_array(x: Any, what: str) -> np.ndarray:
    """Return ``x`` (numpy array or torch tensor of integers) as an int64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(
            f"{what} must hold integer class indices, got dtype {arr.dtype}; "
            "take the argmax of the scores before evaluating."
        )
    return arr.astype(np.int64, copy=False)


def intersect_and_union(
    pred: Any, label: Any, num_classes: int, ignore_index: int = 255
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Count per-class pixels of one prediction against its label map.

    Args:
        pred: (H, W) integer class indices (numpy array or torch tensor, any device).
        label: (H, W) integer class indices of the same shape; ``ignore_index`` marks pixels
            that are not evaluated.
        num_classes: number of classes C; values outside ``[0, C)`` are not counted.
        ignore_index: label value to drop.

    Returns:
        ``(intersect, union, pred_area, label_area)``, each an int64 array of shape (C,).

    Raises:
        ValueError: the shapes of ``pred`` and ``label`` differ.
        TypeError: either input is not an integer array.
    """
    pred_arr = _as_int_array(pred, "pred")
    label_arr = _as_int_array(label, "label")
    if pred_arr.shape != label_arr.shape:
        raise ValueError(
            f"Prediction shape {tuple(pred_arr.shape)} does not match label shape "
            f"{tuple(label_arr.shape)}; resize the prediction to the label size "
            "(nearest neighbour) before evaluating."
        )
    keep = label_arr != ignore_index
    p = pred_arr[keep]
    lab = label_arr[keep]

    def hist(values: np.ndarray) -> np.ndarray:
        values = values[(values >= 0) & (values < num_classes)]
        return np.bincount(values, minlength=num_classes).astype(np.int64, copy=False)

    intersect = hist(lab[p == lab])
    pred_area = hist(p)
    label_area = hist(lab)
    union = pred_area + label_area - intersect
    return intersect, union, pred_area, label_area


def nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN (without a warning) when every entry is NaN."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` as float64 with NaN where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


class SemSegMetric:
    """Accumulates per-class pixel counts over images and turns them into mIoU-style metrics.

    Args:
        num_classes: number of classes C (label values ``0 .. C-1``).
        class_names: C display names, in class-index order.
        ignore_index: label value marking pixels left out of the evaluation.
        groups: optional named subsets of ``class_names`` (e.g. ``{"seen": [...],
            "unseen": [...]}``); ``compute`` reports mIoU / mAcc over each.

    Usage::

        metric = SemSegMetric(3, ["sky", "tree", "road"])
        metric.process(pred_hw, label_hw)          # once per image
        metric.all_reduce()                        # under torch.distributed, once
        results = metric.compute()                 # {"aAcc", "mIoU", "mAcc", "IoU", ...}
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str],
        ignore_index: int = 255,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        class_names = [str(n) for n in class_names]
        if int(num_classes) < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}.")
        if len(class_names) != int(num_classes):
            raise ConfigError(
                f"num_classes is {num_classes} but {len(class_names)} class names were given; "
                "pass one name per class."
            )
        self.num_classes = int(num_classes)
        self.class_names = class_names
        self.ignore_index = int(ignore_index)
        self.groups = self._resolve_groups(groups or {})
        self.reset()

    def _resolve_groups(self, groups: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
        """Map each group name to the class indices of its members (checked against names)."""
        index = {name: i for i, name in enumerate(self.class_names)}
        resolved: dict[str, list[int]] = {}
        for group, members in groups.items():
            if isinstance(members, str):
                raise ConfigError(
                    f"Group {group!r} must be a list of class names, got the string {members!r}."
                )
            unknown = [m for m in members if m not in index]
            if unknown:
                raise ConfigError(
                    f"Group {group!r} names classes that are not in class_names: "
                    f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}; "
                    "fix the group or the class list."
                )
            resolved[str(group)] = [index[m] for m in members]
        return resolved

    def reset(self) -> None:
        """Forget all counts."""
        self._counts = {k: np.zeros(self.num_classes, dtype=np.int64) for k in COUNT_KEYS}
        self.num_images = 0
        self._reduced = False

    def process(self, pred: Any, label: Any) -> None:
        """Add one image: ``pred`` and ``label`` are (H, W) integer maps of the same shape.

        Both may be numpy arrays or torch tensors (any device). Raises ValueError when the
        shapes differ and TypeError when either is not integer-typed.
        """
        counts = intersect_and_union(pred, label, self.num_classes, self.ignore_index)
        for key, value in zip(COUNT_KEYS, counts):
            self._counts[key] += value
        self.num_images += 1

    def state(self) -> dict[str, Any]:
        """A copy of the accumulated counts: four int64 (C,) arrays and ``num_images``."""
        out: dict[str, Any] = {k: v.copy() for k, v in self._counts.items()}
        out["num_images"] = self.num_images
        return out

    def merge(self, other: SemSegMetric | Mapping[str, Any]) -> None:
        """Add the counts of another metric (or of a ``state()`` dict) to this one."""
        state = other.state() if isinstance(other, SemSegMetric) else other
        for key in COUNT_KEYS:
            value = np.asarray(state[key], dtype=np.int64)
            if value.shape != (self.num_classes,):
                raise ValueError(
                    f"Cannot merge counts of shape {value.shape} into a metric with "
                    f"{self.num_classes} classes; both must use the same class list."
                )
            self._counts[key] += value
        self.num_images += int(state.get("num_images", 0))

    def all_reduce(self) -> None:
        """Sum the counts over all torch.distributed ranks (no-op when not initialised).

        Call it once, after every rank has processed its share; afterwards every rank holds the
        totals. Calling it twice would count every image twice, so that raises RuntimeError.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        if self._reduced:
            raise RuntimeError(
                "SemSegMetric.all_reduce() was already called; call reset() before reusing it."
            )
        device = torch.device("cpu")
        if "nccl" in str(dist.get_backend()).lower():
            device = torch.device("cuda", torch.cuda.current_device())
        # One (4*C + 1,) int64 buffer: a single collective, exact integer sums.
        flat = np.concatenate([self._counts[k] for k in COUNT_KEYS] + [[self.num_images]])
        buf = torch.from_numpy(flat.astype(np.int64)).to(device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        total = buf.cpu().numpy()
        c = self.num_classes
        for i, key in enumerate(COUNT_KEYS):
            self._counts[key] = total[i * c : (i + 1) * c].copy()
        self.num_images = int(total[-1])
        self._reduced = True

    def compute(self) -> dict[str, Any]:
        """Metrics from the counts so far, in percent (x100, not rounded).

        Returns:
            ``{"aAcc": float, "mIoU": float, "mAcc": float,
            "IoU": (C,) float64 array, "Acc": (C,) float64 array,
            "groups": {name: {"mIoU": float, "mAcc": float}}, "num_images": int}``.
            Per-class entries are NaN where undefined (see the module docstring); the means
            skip them. A group whose classes are all NaN has NaN means.
        """
        inter = self._counts["intersect"]
        iou = _ratio(inter, self._counts["union"]) * 100.0
        acc = _ratio(inter, self._counts["label_area"]) * 100.0
        total_label = self._counts["label_area"].sum()
        a_acc = float(inter.sum() / total_label * 100.0) if total_label else float("nan")
        groups = {
            name: {"mIoU": nanmean(iou[idx]), "mAcc": nanmean(acc[idx])}
            for name, idx in self.groups.items()
        }
        return {
            "aAcc": a_acc,
            "mIoU": nanmean(iou),
            "mAcc": nanmean(acc),
            "IoU": iou,
            "Acc": acc,
            "groups": groups,
            "num_images": self.num_images,
        }

    def group_classes(self) -> dict[str, list[str]]:
        """Group name -> member class names, in the order given."""
        return {g: [self.class_names[i] for i in idx] for g, idx in self.groups.items()}
