"""Video metrics: J&F (DAVIS) for object masks over time, track AP (YouTube-VIS).

**J&F** (Perazzi et al., DAVIS 2016; the DAVIS 2017 evaluation toolkit's definitions):

* J, region similarity: ``|P & G| / |P | G|`` per frame, 1 when both masks are empty;
* F, boundary accuracy: the one-pixel boundary maps of both masks (:func:`boundary_map`, the
  toolkit's ``seg2bmap``: a pixel is on the boundary when it differs from its right, lower or
  lower-right neighbour; the last row compares with the right neighbour only, the last column
  with the lower one only, the corner is never a boundary), each dilated by a disk of radius
  ``ceil(0.008 x image diagonal)`` pixels; precision = predicted boundary pixels within the
  dilated true boundary / predicted boundary pixels, recall the converse; F = 2PR / (P + R)
  (no predicted boundary: P = 1; no true boundary: R = 1; both empty: F = 1; P + R = 0: F = 0);
* per object: the mean of J and of F over its frames (the DAVIS semi-supervised protocol also
  drops the first and last frame, ``skip_first_last=True``); J&F = (mean J + mean F) / 2 over
  all objects.

**Track AP** (YouTube-VIS, Yang et al. 2019): a predicted track and a ground-truth track match
by their spatio-temporal mask IoU, ``sum_t |P_t & G_t| / sum_t |P_t | G_t|`` over all frames (a
frame where a track is absent counts as an empty mask). Per category, the COCO protocol:
predictions sorted by score (stable), at most ``max_dets`` per video, each greedily matched to
the unmatched ground truth of highest IoU >= the threshold; precision made monotone and read at
the 101 recall points 0, 0.01, ..., 1; AP is their mean; mAP the mean over categories with
ground truth and the IoU thresholds 0.50:0.05:0.95 (AP50 / AP75 at one threshold). Crowd
annotations and area ranges are not used (the synthetic ground truth has none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ovseg.errors import EvaluationError

__all__ = [
    "IOU_THRESHOLDS",
    "VideoTrack",
    "boundary_f",
    "boundary_map",
    "disk",
    "jaccard",
    "j_and_f",
    "spatiotemporal_iou",
    "track_ap",
]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
BOUNDARY_THRESHOLD = 0.008


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise EvaluationError(f"Prediction {pred.shape} and ground truth {gt.shape} differ.")
    return pred, gt


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity of two ``(H, W)`` masks (1 when both are empty)."""
    pred, gt = _pair(pred, gt)
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool one-pixel boundary of a mask (see the module docstring)."""
    seg = np.asarray(mask, dtype=bool)
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    diagonal = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    diagonal[:-1, :-1] = seg[1:, 1:]
    boundary = (seg ^ right) | (seg ^ below) | (seg ^ diagonal)
    boundary[-1, :] = seg[-1, :] ^ right[-1, :]
    boundary[:, -1] = seg[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def disk(radius: float) -> np.ndarray:
    """``(2r+1, 2r+1)`` uint8 disk: offsets ``(dx, dy)`` with ``dx^2 + dy^2 <= r^2``."""
    steps = np.arange(-int(radius), int(radius) + 1)
    dx, dy = np.meshgrid(steps, steps)
    return (dx**2 + dy**2 <= radius**2).astype(np.uint8)


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUNDARY_THRESHOLD) -> float:
    """Boundary F-measure of two ``(H, W)`` masks; ``bound_th`` < 1 is a fraction of the
    image diagonal, >= 1 a radius in pixels."""
    import cv2

    pred, gt = _pair(pred, gt)
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred.shape))
    pred_b, gt_b = boundary_map(pred), boundary_map(gt)
    kernel = disk(radius)
    pred_dil = cv2.dilate(pred_b.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = float((pred_b & gt_dil).sum() / n_pred)
        recall = float((gt_b & pred_dil).sum() / n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def j_and_f(
    objects: Mapping[object, tuple[Sequence[np.ndarray], Sequence[np.ndarray]]],
    *,
    skip_first_last: bool = False,
    bound_th: float = BOUNDARY_THRESHOLD,
) -> dict[str, object]:
    """J&F over objects: ``objects[key] = (predicted masks, true masks)``, one per frame.

    Returns ``{"J&F", "J", "F", "J_recall", "F_recall", "per_object": {key: {"J", "F"}}}``
    (recall: the fraction of frames above 0.5, the toolkit's ``db_statistics``), in [0, 1].
    """
    if not objects:
        raise EvaluationError("J&F needs at least one object.")
    per_object: dict[object, dict[str, float]] = {}
    js, fs, jr, fr = [], [], [], []
    for key, (preds, gts) in objects.items():
        if len(preds) != len(gts):
            raise EvaluationError(f"Object {key}: {len(preds)} predicted vs {len(gts)} frames.")
        pairs = list(zip(preds, gts, strict=True))
        if skip_first_last:
            pairs = pairs[1:-1]
        if not pairs:
            raise EvaluationError(f"Object {key} has no frame to evaluate.")
        j = np.array([jaccard(p, g) for p, g in pairs])
        f = np.array([boundary_f(p, g, bound_th) for p, g in pairs])
        per_object[key] = {"J": float(j.mean()), "F": float(f.mean())}
        js.append(j.mean())
        fs.append(f.mean())
        jr.append((j > 0.5).mean())
        fr.append((f > 0.5).mean())
    j_mean, f_mean = float(np.mean(js)), float(np.mean(fs))
    return {
        "J&F": (j_mean + f_mean) / 2,
        "J": j_mean,
        "F": f_mean,
        "J_recall": float(np.mean(jr)),
        "F_recall": float(np.mean(fr)),
        "per_object": per_object,
    }


@dataclass
class VideoTrack:
    """One track of one video: ``masks`` maps frame index -> ``(H, W)`` bool (absent frames
    are empty); ``score`` is ignored for ground truth."""

    video: object
    category: int
    masks: Mapping[int, np.ndarray]
    score: float = 1.0


def spatiotemporal_iou(a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray]) -> float:
    """``sum_t |A_t & B_t| / sum_t |A_t | B_t|`` over the frames of both (0 when both are empty)."""
    inter = union = 0
    for t in set(a) | set(b):
        ma, mb = a.get(t), b.get(t)
        if ma is None:
            union += int(np.asarray(mb, bool).sum())
        elif mb is None:
            union += int(np.asarray(ma, bool).sum())
        else:
            ma, mb = _pair(ma, mb)
            inter += int(np.logical_and(ma, mb).sum())
            union += int(np.logical_or(ma, mb).sum())
    return inter / union if union else 0.0


def _match(ious: np.ndarray, threshold: float) -> np.ndarray:
    """COCO greedy matching of score-sorted predictions (rows) to ground truth (columns)."""
    matched = np.zeros(len(ious), dtype=bool)
    taken = np.zeros(ious.shape[1], dtype=bool)
    for d in range(len(ious)):
        best, best_iou = -1, min(threshold, 1 - 1e-10)
        for g in range(ious.shape[1]):
            if taken[g] or ious[d, g] < best_iou:
                continue
            best, best_iou = g, ious[d, g]
        if best >= 0:
            taken[best] = True
            matched[d] = True
    return matched


def _average_precision(scores: np.ndarray, matched: np.ndarray, num_gt: int) -> float:
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[order])
    fp = np.cumsum(~matched[order])
    recall = tp / num_gt
    precision = tp / np.maximum(tp + fp, np.spacing(1))
    for i in range(len(precision) - 1, 0, -1):
        precision[i - 1] = max(precision[i - 1], precision[i])
    sampled = np.zeros(len(RECALL_POINTS))
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    for k, i in enumerate(idx):
        if i < len(precision):
            sampled[k] = precision[i]
    return float(sampled.mean())


def track_ap(
    predictions: Sequence[VideoTrack],
    ground_truth: Sequence[VideoTrack],
    *,
    iou_thresholds: Sequence[float] = tuple(IOU_THRESHOLDS),
    max_dets: int = 100,
) -> dict[str, object]:
    """Track mAP (see the module docstring): ``{"mAP", "AP50", "AP75", "per_category":
    {category: AP over thresholds}}`` in [0, 1]; categories without ground truth are skipped."""
    categories = sorted({t.category for t in ground_truth})
    if not categories:
        raise EvaluationError("Track AP needs ground-truth tracks.")
    thresholds = [float(t) for t in iou_thresholds]
    table = np.zeros((len(categories), len(thresholds)))
    for ci, category in enumerate(categories):
        gts = [t for t in ground_truth if t.category == category]
        dets = [t for t in predictions if t.category == category]
        videos = {t.video for t in gts} | {t.video for t in dets}
        per_threshold: list[list[tuple[float, bool]]] = [[] for _ in thresholds]
        for video in sorted(videos, key=str):
            vg = [t for t in gts if t.video == video]
            vd = [t for t in dets if t.video == video]
            order = np.argsort([-t.score for t in vd], kind="mergesort")[:max_dets]
            vd = [vd[i] for i in order]
            if not vd:
                continue
            ious = np.array([[spatiotemporal_iou(d.masks, g.masks) for g in vg] for d in vd])
            ious = ious.reshape(len(vd), len(vg))
            for ti, threshold in enumerate(thresholds):
                matched = _match(ious, threshold) if len(vg) else np.zeros(len(vd), bool)
                per_threshold[ti] += [(d.score, m) for d, m in zip(vd, matched, strict=True)]
        for ti in range(len(thresholds)):
            if not per_threshold[ti]:
                continue
            scores = np.array([s for s, _ in per_threshold[ti]], dtype=np.float64)
            matched = np.array([m for _, m in per_threshold[ti]], dtype=bool)
            table[ci, ti] = _average_precision(scores, matched, len(gts))

    def at(value: float) -> float:
        hits = [i for i, t in enumerate(thresholds) if abs(t - value) < 1e-9]
        return float(table[:, hits[0]].mean()) if hits else float("nan")

    return {
        "mAP": float(table.mean()),
        "AP50": at(0.5),
        "AP75": at(0.75),
        "per_category": {c: float(table[i].mean()) for i, c in enumerate(categories)},
    }
