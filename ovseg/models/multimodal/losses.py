"""LISA / READ mask losses on SAM's mask logits (per mask, averaged over masks).

Both take ``logits`` and ``targets`` ``(K, H, W)`` (targets in {0, 1}) and ``num_masks``, and
return ``sum over masks of the per-mask loss / (num_masks + 1e-8)``:

* :func:`sigmoid_bce_loss`: binary cross-entropy with logits, averaged over the pixels of a mask;
* :func:`dice_loss`: ``1 - (2 * sum(p * t) + eps) / (sum(p) + sum(t) + eps)`` with
  ``p = sigmoid(logits)``; LISA divides ``p`` and ``t`` by ``scale = 1000`` before summing
  (a change of units only: with ``eps = 1e-6`` it sets how much ``eps`` weighs), kept as is.

Not in LISA / READ (an ovseg option, off by default): :func:`similarity_ce_loss` supervises the
``[SEG]``-to-image-token similarity map that SasP turns into points (see
:class:`~ovseg.models.multimodal.read.ReadModel`'s ``similarity_loss_weight``), and
:func:`grid_occupancy` gives its target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dice_loss", "grid_occupancy", "sigmoid_bce_loss", "similarity_ce_loss"]


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


def grid_occupancy(
    mask: torch.Tensor, region: tuple[float, float, float, float] | None, grid: tuple[int, int]
) -> torch.Tensor:
    """The fraction of each patch cell a mask covers.

    ``mask`` ``(H, W)`` in {0, 1} (input-image pixels); ``region`` ``(x0, y0, x1, y1)``: the
    rectangle the patch grid covers (pixel edges, rounded to whole pixels; None: the whole
    image); ``grid`` ``(h, w)``. Returns ``(h * w,)`` float32 in [0, 1], row-major (area
    averaging over each cell, as ``adaptive_avg_pool2d`` splits the rectangle).
    """
    if region is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in region)
        mask = mask[y0:y1, x0:x1]
    pooled = F.adaptive_avg_pool2d(mask[None, None].float(), tuple(int(g) for g in grid))
    return pooled.flatten()


def similarity_ce_loss(similarity: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy of one similarity map against where its target lies.

    ``similarity`` ``(N,)``: ``[SEG]``-to-image-token dot products (the map SasP reads), scaled
    as the caller likes (SasP's min-max normalisation ignores a positive scale; ReadModel divides
    by ``sqrt(hidden size)`` as attention does); ``occupancy`` ``(N,)`` from
    :func:`grid_occupancy`. The target distribution is the occupancy normalised to sum 1; the
    loss is ``-sum(target * log_softmax(similarity))``, minimised when the map is high on the
    target's cells and low elsewhere (what SasP's thresholds need). A target that covers no
    cell gives 0 (kept in the graph).
    """
    total = occupancy.sum()
    log_probs = F.log_softmax(similarity.float(), dim=-1)
    if float(total) <= 0:
        return log_probs.sum() * 0.0
    return -(occupancy.to(log_probs) / total * log_probs).sum()
