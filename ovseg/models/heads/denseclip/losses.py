"""Segmentation losses as the DenseCLIP reference computes them (mmseg 0.x decode heads).

Both the decode head's logits and the auxiliary score-map logits are upsampled to the label's
size (bilinear, ``align_corners=False``) before a per-pixel cross-entropy. mmseg's
``CrossEntropyLoss`` (``avg_non_ignore=False``, the only behaviour before mmseg 0.23) gives
ignored pixels a loss of 0 but still counts them in the mean, i.e. it averages over *all*
pixels; ``avg_non_ignore=True`` averages over the labelled ones only (PyTorch's default).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255


def segmentation_cross_entropy(
    logits: Tensor,
    label: Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    avg_non_ignore: bool = False,
) -> Tensor:
    """Cross-entropy of ``(B, K, h, w)`` logits against a ``(B, H, W)`` int64 label map.

    The logits are resized to ``(H, W)`` bilinearly (``align_corners=False``) first. Returns a
    0-dim tensor: the sum of per-pixel losses divided by ``B * H * W`` (``avg_non_ignore=False``)
    or by the number of labelled pixels (``True``; 0 when there is none).
    """
    if logits.shape[-2:] != label.shape[-2:]:
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    losses = F.cross_entropy(logits.float(), label, ignore_index=ignore_index, reduction="none")
    if not avg_non_ignore:
        return losses.mean()
    valid = (label != ignore_index).sum()
    return losses.sum() / valid.clamp(min=1)


def score_map_loss(
    score_map: Tensor,
    label: Tensor,
    *,
    tau: float = 0.07,
    weight: float = 0.4,
    ignore_index: int = IGNORE_INDEX,
    avg_non_ignore: bool = False,
) -> Tensor:
    """DenseCLIP's auxiliary loss: ``weight * CE(upsample(score_map / tau), label)``."""
    return weight * segmentation_cross_entropy(
        score_map / tau, label, ignore_index=ignore_index, avg_non_ignore=avg_non_ignore
    )
