"""Boxes from masks, box / mask IoU and class-wise greedy non-maximum suppression.

Boxes are XYXY in input-image pixels with exclusive ``x2, y2`` (as in
:class:`~ovseg.structures.Instances`): a one-pixel mask at ``(x, y)`` has box
``(x, y, x + 1, y + 1)`` and area 1, so box areas are ``(x2 - x1) * (y2 - y1)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ovseg.errors import ConfigError

__all__ = [
    "box_iou",
    "boxes_from_masks",
    "check_cross_class_iou",
    "class_wise_nms",
    "cross_class_nms",
    "mask_iou",
    "matched_mask_iou",
    "merge_parts",
]


def _as_tensor(values, dtype=None) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    return tensor.to(dtype) if dtype is not None else tensor


def boxes_from_masks(masks: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``(N, H, W)`` bool masks -> ``(N, 4)`` float32 XYXY boxes (exclusive ``x2, y2``).

    An empty mask gets ``(0, 0, 0, 0)``.
    """
    masks = _as_tensor(masks, torch.bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {tuple(masks.shape)}.")
    count, height, width = masks.shape
    boxes = torch.zeros(count, 4, dtype=torch.float32)
    if count == 0:
        return boxes
    cols = masks.any(dim=1)  # (N, W)
    rows = masks.any(dim=2)  # (N, H)
    present = cols.any(dim=1)
    x_index = torch.arange(width)
    y_index = torch.arange(height)
    x1 = torch.where(cols, x_index, width).amin(dim=1)
    x2 = torch.where(cols, x_index, -1).amax(dim=1) + 1
    y1 = torch.where(rows, y_index, height).amin(dim=1)
    y2 = torch.where(rows, y_index, -1).amax(dim=1) + 1
    boxes[present] = torch.stack([x1, y1, x2, y2], dim=1)[present].float()
    return boxes


def box_masks(boxes: torch.Tensor | np.ndarray, height: int, width: int) -> torch.Tensor:
    """``(N, 4)`` XYXY boxes (continuous input-pixel edges) -> ``(N, H, W)`` bool masks.

    A pixel is in a box when its centre ``(x + 0.5, y + 0.5)`` is; a box holding no pixel
    centre (thinner than a pixel, or outside the image) gets the pixel nearest its centre, so
    that every box has a mask with an extent.
    """
    boxes = _as_tensor(boxes, torch.float32).reshape(-1, 4)
    centres_x = torch.arange(width, dtype=torch.float32) + 0.5
    centres_y = torch.arange(height, dtype=torch.float32) + 0.5
    inside_x = (centres_x[None] >= boxes[:, 0:1]) & (centres_x[None] < boxes[:, 2:3])  # (N, W)
    inside_y = (centres_y[None] >= boxes[:, 1:2]) & (centres_y[None] < boxes[:, 3:4])  # (N, H)
    masks = inside_y[:, :, None] & inside_x[:, None, :]
    empty = ~masks.flatten(1).any(dim=1)
    if empty.any():
        centre_x = ((boxes[empty, 0] + boxes[empty, 2]) / 2).floor().long().clamp(0, width - 1)
        centre_y = ((boxes[empty, 1] + boxes[empty, 3]) / 2).floor().long().clamp(0, height - 1)
        masks[torch.nonzero(empty).flatten(), centre_y, centre_x] = True
    return masks


def box_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor:
    """IoU of XYXY boxes ``a`` ``(N, 4)`` and ``b`` ``(M, 4)`` -> ``(N, M)`` float64."""
    a = _as_tensor(a, torch.float64).reshape(-1, 4)
    b = _as_tensor(b, torch.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    left_top = torch.maximum(a[:, None, :2], b[None, :, :2])
    right_bottom = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (right_bottom - left_top).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def mask_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor:
    """IoU of bool masks ``a`` ``(N, H, W)`` and ``b`` ``(M, H, W)`` -> ``(N, M)`` float64."""
    a = _as_tensor(a, torch.bool).flatten(1).float()
    b = _as_tensor(b, torch.bool).flatten(1).float()
    inter = (a @ b.t()).double()
    union = a.sum(1).double()[:, None] + b.sum(1).double()[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def matched_mask_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor:
    """IoU of each mask of ``a`` ``(N, H, W)`` with the mask of ``b`` ``(N, H, W)`` at the same
    index -> ``(N,)`` float64 (0 where both are empty); memory ``O(N x H x W)`` bits, unlike the
    ``(N, M)`` :func:`mask_iou`."""
    a = _as_tensor(a, torch.bool).flatten(1)
    b = _as_tensor(b, torch.bool).flatten(1)
    inter = (a & b).sum(dim=1).double()
    union = (a | b).sum(dim=1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def class_wise_nms(
    scores: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    *,
    boxes: torch.Tensor | np.ndarray | None = None,
    masks: torch.Tensor | np.ndarray | None = None,
    iou_threshold: float = 0.5,
    mode: str = "box",
) -> np.ndarray:
    """Greedy NMS within each label; returns kept indices, highest score first.

    Items are visited from the highest score down (ties: lower index first); an item is dropped
    when its IoU with a kept item of the same label is strictly greater than ``iou_threshold``
    (torchvision's ``batched_nms`` rule). ``mode="box"`` uses ``boxes`` ``(N, 4)`` XYXY,
    ``mode="mask"`` uses ``masks`` ``(N, H, W)``.

    Returns:
        ``(K,)`` int64 indices into the inputs.
    """
    scores = _as_tensor(scores, torch.float64).reshape(-1)
    labels = _as_tensor(labels, torch.int64).reshape(-1)
    if mode == "box":
        if boxes is None:
            raise ConfigError("Box NMS needs boxes.")
        items = _as_tensor(boxes, torch.float64).reshape(-1, 4)
        iou_fn = box_iou
    elif mode == "mask":
        if masks is None:
            raise ConfigError("Mask NMS needs masks.")
        items = _as_tensor(masks, torch.bool)
        iou_fn = mask_iou
    else:
        raise ConfigError(f"NMS mode must be 'box' or 'mask', not {mode!r}.")
    if not (len(items) == len(scores) == len(labels)):
        raise ValueError("NMS needs as many scores, labels and boxes/masks.")
    keep: list[int] = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.argsort(scores[members], descending=True, stable=True)]
        ious = iou_fn(items[members], items[members])
        alive = torch.ones(len(members), dtype=torch.bool)
        for position in range(len(members)):
            if not alive[position]:
                continue
            keep.append(int(members[position]))
            later = torch.arange(len(members)) > position
            alive &= ~(later & (ious[position] > iou_threshold))
    keep.sort(key=lambda index: (-float(scores[index]), index))
    return np.asarray(keep, dtype=np.int64)


def check_cross_class_iou(value: Any) -> float | None:
    """``postprocess.cross_class_iou`` checked: None, or a mask IoU in ``(0, 1]``."""
    if value is not None and not (
        isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
    ):
        raise ConfigError(
            f"postprocess.cross_class_iou must be null or a mask IoU in (0, 1], got {value!r}."
        )
    return None if value is None else float(value)


def cross_class_nms(
    order: np.ndarray,
    scores: torch.Tensor | np.ndarray,
    masks: torch.Tensor | np.ndarray,
    iou_threshold: float | None,
) -> np.ndarray:
    """Mask NMS across classes over the kept indices ``order`` (best score first, e.g. from
    :func:`class_wise_nms`): an item whose mask IoU with a better-scored kept item of any class
    exceeds ``iou_threshold`` goes, so one object named twice keeps its better name. ``masks``
    ``(N, H, W)``; ``None`` returns ``order`` unchanged."""
    if iou_threshold is None or len(order) < 2:
        return order
    kept = torch.from_numpy(np.asarray(order))
    return order[
        class_wise_nms(
            _as_tensor(scores)[kept],
            torch.zeros(len(order), dtype=torch.int64),
            masks=_as_tensor(masks)[kept],
            iou_threshold=float(iou_threshold),
            mode="mask",
        )
    ]


def merge_parts(
    masks: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    min_overlap: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Join same-label masks that are parts of one object into their union.

    Visiting masks from the highest score down, each unvisited mask starts a group; a mask of
    the same label joins the group (its union grows) while its intersection with the union is
    at least ``min_overlap`` of the smaller of the two areas; joining repeats until nothing more
    joins. A group keeps its first (highest) score and its label.

    Args:
        masks: ``(N, H, W)`` bool. scores: ``(N,)``. labels: ``(N,)`` int.
        min_overlap: in ``(0, 1]``.

    Returns:
        ``(masks (G, H, W) bool, scores (G,) float32, labels (G,) int64)``, highest score first.
    """
    if not 0.0 < float(min_overlap) <= 1.0:
        raise ConfigError(f"min_overlap must lie in (0, 1], got {min_overlap}.")
    masks = _as_tensor(masks, torch.bool)
    scores = _as_tensor(scores, torch.float32).reshape(-1)
    labels = _as_tensor(labels, torch.int64).reshape(-1)
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    flat = masks.flatten(1)
    areas = flat.sum(dim=1)
    used = torch.zeros(len(order), dtype=torch.bool)
    out_masks, out_scores, out_labels = [], [], []
    for first in order:
        if used[first]:
            continue
        used[first] = True
        union = flat[first].clone()
        grown = True
        while grown:
            grown = False
            for other in order:
                if used[other] or labels[other] != labels[first]:
                    continue
                inter = int((union & flat[other]).sum())
                smaller = min(int(union.sum()), int(areas[other]))
                if smaller > 0 and inter >= float(min_overlap) * smaller:
                    union |= flat[other]
                    used[other] = True
                    grown = True
        out_masks.append(union.view(masks.shape[1:]))
        out_scores.append(scores[first])
        out_labels.append(labels[first])
    if not out_masks:
        return masks[:0], scores[:0], labels[:0]
    return torch.stack(out_masks), torch.stack(out_scores), torch.stack(out_labels)
