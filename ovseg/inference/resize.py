"""Test-time resizing as the reference code does it (mmcv ``imrescale`` with ``keep_ratio``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


class PreparedImage(NamedTuple):
    """One image ready for a windowed dense encoder.

    Attributes:
        array: ``(H, W, 3)`` uint8 RGB, the decoded input.
        tensor: normalised ``(1, 3, H'', W'')`` float32 on the model's device (resized, then
            zero-padded at the bottom / right to at least one patch).
        resized: ``(H', W')`` the image was resized to (before padding).
        original: ``(H, W)`` of the input.
    """

    array: Any
    tensor: torch.Tensor
    resized: tuple[int, int]
    original: tuple[int, int]


def to_device_pixels(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float32 in [0, 1] on ``device``.

    On CUDA the uint8 pixels travel (a quarter of the float bytes) from pinned memory without
    blocking the host, and are converted on the GPU; elsewhere the conversion runs in place.
    Both give the same values (``x / 255`` in float32).
    """
    device = torch.device(device)
    pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    if device.type == "cuda":
        pixels = pixels.contiguous().pin_memory().to(device, non_blocking=True)
    return pixels.float().div_(255.0) if device.type == "cuda" else pixels.float() / 255.0


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


def pad_to_min_side(images: torch.Tensor, min_side: int) -> torch.Tensor:
    """Zero-pad ``(B, C, H, W)`` at the bottom / right so both sides are at least ``min_side``.

    A very thin image (4000 x 20 resized to keep its ratio) can end up narrower than one patch;
    padding gives the encoder a valid input, and callers crop the scores back to ``(H, W)``.
    """
    height, width = images.shape[-2:]
    pad_h, pad_w = max(0, min_side - height), max(0, min_side - width)
    if not pad_h and not pad_w:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h))


def prepare_image(
    image: torch.Tensor,
    short_side: int | None,
    max_long_side: int | None,
    normalize,
    min_side: int = 1,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(1, 3, H, W)`` float RGB in [0, 1] -> normalised ``(1, 3, H'', W'')`` and ``(H', W')``.

    The image is resized keeping its ratio (:func:`rescale_size`: ``short_side``, long side
    capped at ``max_long_side``), each side kept at least 1 pixel, normalised with
    ``normalize``, then zero-padded (:func:`pad_to_min_side`) to ``min_side``; ``(H', W')`` is
    the resized size before padding.
    """
    height, width = image.shape[-2:]
    size = rescale_size(int(height), int(width), short_side, max_long_side)
    size = (max(1, size[0]), max(1, size[1]))
    return pad_to_min_side(normalize(resize_bilinear(image, size)), min_side), size
