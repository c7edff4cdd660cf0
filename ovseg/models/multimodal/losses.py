"""LISA / READ mask losses on SAM's mask logits (per mask, averaged over masks).

Both take ``logits`` and ``targets`` ``(K, H, W)`` (targets in {0, 1}) and ``num_masks``, and
return ``sum over masks of the per-mask loss / (num_masks + 1e-8)``:

* :func:`sigmoid_bce_loss`: binary cross-entropy with logits, averaged over the pixels of a mask;
* :func:`dice_loss`: ``1 - (2 * sum(p * t) + eps) / (sum(p) + sum(t) + eps)`` with
  ``p = sigmoid(logits)``; LISA divides ``p`` and ``t`` by ``scale = 1000`` before summing
  (a change of units only: with ``eps = 1e-6`` it sets how much ``eps`` weighs), kept as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dice_loss", "sigmoid_bce_loss"]


def dice_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_masks: float,
    scale: float = 1000.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """LISA's DICE loss (module docstring); ``logits``/``targets`` ``(K, H, W)``."""
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1).to(probs.dtype)
    numerator = 2 * (probs / scale * targets).sum(-1)
    denominator = (probs / scale).sum(-1) + (targets / scale).sum(-1)
    loss = 1 - (numerator + eps) / (denominator + eps)
    return loss.sum() / (num_masks + 1e-8)


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """LISA's sigmoid cross-entropy (module docstring); ``logits``/``targets`` ``(K, H, W)``."""
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return loss.flatten(1).mean(1).sum() / (num_masks + 1e-8)
