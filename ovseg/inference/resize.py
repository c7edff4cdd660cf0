"""Test-time resizing as the reference code does it (mmcv ``imrescale`` with ``keep_ratio``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rescale_size(
    height: int, width: int, short_side: int | None, max_long_side: int | None = None
) -> tuple[int, int]:
    """Target ``(h, w)`` for a keep-ratio resize to ``short_side`` with the long side capped.

    The factor is ``min(max_long_side / long, short_side / short)`` and each side becomes
    ``int(side * factor + 0.5)`` (mmcv's rule for ``Resize(scale=(max_long, short), keep_ratio)``).
    ``short_side=None`` keeps the size.
    """
    if short_side is None:
        return height, width
    long_edge, short_edge = max(height, width), min(height, width)
    factor = short_side / short_edge
    if max_long_side is not None:
        factor = min(factor, max_long_side / long_edge)
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_bilinear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, *size)``, bilinear, ``align_corners=False``, no antialiasing
    (the sampling of OpenCV's ``INTER_LINEAR`` that the reference pipelines use)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)
