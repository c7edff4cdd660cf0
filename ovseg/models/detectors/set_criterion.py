"""DETR-style set loss of OWL-ViT: Hungarian matching, sigmoid focal class loss, L1 and GIoU.

Every patch token predicts one box and a logit per query; training matches the ground-truth
objects of an image one-to-one to predictions (Hungarian, ``scipy.optimize.linear_sum_assignment``)
and scores the matched and unmatched predictions. The losses follow OWL-ViT's training recipe
(scenic ``owl_vit`` configs: class, box L1 and GIoU weights 1 : 1 : 1, sigmoid focal loss with
``alpha = 0.3``, ``gamma = 2``, per-example normalisation):

* matching cost of prediction ``p`` and target ``t`` with class ``c``:
  ``w_class * (pos(p, c) - neg(p, c)) + w_l1 * |box_p - box_t|_1 - w_giou * GIoU(box_p, box_t)``
  where ``pos = alpha (1 - s)^gamma (-log s)`` and ``neg = (1 - alpha) s^gamma (-log(1 - s))``,
  ``s = sigmoid(logit)`` (the focal cost of Deformable DETR);
* class loss: sigmoid focal loss over every prediction and query, the target 1 at the matched
  class of a matched prediction and 0 elsewhere, summed and divided by the image's number of
  objects (at least 1);
* box losses: L1 of ``(cx, cy, w, h)`` (normalised) and ``1 - GIoU`` over the matched pairs,
  summed and divided by the number of objects;
* per-example normalisation: each image's losses are averaged over the batch.

Boxes are ``(cx, cy, w, h)`` normalised to the model's input frame, in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SetCriterion",
    "box_cxcywh_to_xyxy",
    "focal_match_cost",
    "generalized_box_iou",
    "hungarian_match",
    "sigmoid_focal_loss",
]


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` ``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU of XYXY boxes ``(N, 4)`` and ``(M, 4)`` -> ``(N, M)`` in [-1, 1].

    Degenerate boxes (zero area) are allowed; a zero union or enclosing area counts as 1e-7.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area1[:, None] + area2[None, :] - inter
    iou = inter / union.clamp(min=1e-7)
    outer_tl = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    outer_br = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    enclosing = (outer_br - outer_tl).clamp(min=0).prod(dim=-1)
    return iou - (enclosing - union) / enclosing.clamp(min=1e-7)


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.3, gamma: float = 2.0
) -> Tensor:
    """Element-wise sigmoid focal loss (Lin et al.): ``-alpha_t (1 - p_t)^gamma log p_t``."""
    probs = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def focal_match_cost(
    logits: Tensor, classes: Tensor, alpha: float = 0.3, gamma: float = 2.0
) -> Tensor:
    """Class cost ``(P, T)`` of predictions' logits ``(P, Q)`` for targets of ``classes (T,)``."""
    probs = torch.sigmoid(logits[:, classes])
    neg = (1 - alpha) * probs**gamma * -torch.log((1 - probs).clamp(min=1e-8))
    pos = alpha * (1 - probs) ** gamma * -torch.log(probs.clamp(min=1e-8))
    return pos - neg


@torch.no_grad()
def hungarian_match(
    logits: Tensor,
    boxes: Tensor,
    target_classes: Tensor,
    target_boxes: Tensor,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    alpha: float = 0.3,
    gamma: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """One image's optimal assignment (see the module docstring for the cost).

    Args:
        logits: ``(P, Q)`` per-prediction query logits.
        boxes: ``(P, 4)`` predicted ``(cx, cy, w, h)``.
        target_classes: ``(T,)`` query index of each object.
        target_boxes: ``(T, 4)`` object ``(cx, cy, w, h)``.
        weights: ``(class, l1, giou)`` cost weights.

    Returns:
        ``(prediction indices (K,), target indices (K,))`` with ``K = min(P, T)``, long, CPU,
        sorted by prediction index.
    """
    if len(target_classes) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    logits, boxes, target_boxes = logits.float(), boxes.float(), target_boxes.float()
    w_class, w_l1, w_giou = weights
    cost = (
        w_class * focal_match_cost(logits, target_classes, alpha, gamma)
        + w_l1 * torch.cdist(boxes, target_boxes, p=1)
        - w_giou * generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))
    )
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    order = np.argsort(rows)
    return (
        torch.as_tensor(rows[order], dtype=torch.long),
        torch.as_tensor(cols[order], dtype=torch.long),
    )


@dataclass
class SetCriterion:
    """OWL-ViT's set loss (see the module docstring).

    ``weights``: ``(class, l1, giou)`` for both the matching cost and the loss.
    """

    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    alpha: float = 0.3
    gamma: float = 2.0

    def __call__(
        self,
        logits: Tensor,
        boxes: Tensor,
        target_classes: Sequence[Tensor],
        target_boxes: Sequence[Tensor],
    ) -> dict[str, Tensor]:
        """Losses of a batch.

        Args:
            logits: ``(B, P, Q)`` query logits.
            boxes: ``(B, P, 4)`` predicted ``(cx, cy, w, h)`` in [0, 1].
            target_classes: per image ``(T_b,)`` long query indices.
            target_boxes: per image ``(T_b, 4)`` ``(cx, cy, w, h)``.

        Returns:
            ``{"loss", "loss_class", "loss_l1", "loss_giou"}`` (0-dim; ``loss`` is the weighted
            sum), each the mean over images of the per-image normalised loss.
        """
        logits, boxes = logits.float(), boxes.float()
        w_class, w_l1, w_giou = self.weights
        parts: dict[str, list[Tensor]] = {"loss_class": [], "loss_l1": [], "loss_giou": []}
        for b in range(logits.shape[0]):
            classes = target_classes[b].to(logits.device)
            targets = target_boxes[b].to(boxes.device, torch.float32)
            pred_idx, tgt_idx = hungarian_match(
                logits[b], boxes[b], classes, targets, self.weights, self.alpha, self.gamma
            )
            pred_idx, tgt_idx = pred_idx.to(logits.device), tgt_idx.to(logits.device)
            count = max(len(classes), 1)
            onehot = torch.zeros_like(logits[b])
            onehot[pred_idx, classes[tgt_idx]] = 1.0
            parts["loss_class"].append(
                sigmoid_focal_loss(logits[b], onehot, self.alpha, self.gamma).sum() / count
            )
            matched, matched_targets = boxes[b][pred_idx], targets[tgt_idx]
            parts["loss_l1"].append((matched - matched_targets).abs().sum() / count)
            giou = generalized_box_iou(
                box_cxcywh_to_xyxy(matched), box_cxcywh_to_xyxy(matched_targets)
            ).diagonal()
            parts["loss_giou"].append((1 - giou).sum() / count)
        means = {k: torch.stack(v).mean() for k, v in parts.items()}
        loss = w_class * means["loss_class"] + w_l1 * means["loss_l1"] + w_giou * means["loss_giou"]
        return {"loss": loss, **means}
