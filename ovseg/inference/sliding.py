"""Sliding-window geometry and the averaging of per-window score maps.

Windows follow mmseg's ``slide_inference``: ``ceil((H - crop) / stride) + 1`` rows (at least one),
each window at ``i * stride`` and shifted back inside the image at the far edge. Images smaller
than the crop give one window covering the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Window:
    """A crop ``[y1:y2, x1:x2]`` in resized-image pixels."""

    y1: int
    y2: int
    x1: int
    x2: int

    @property
    def size(self) -> tuple[int, int]:
        return self.y2 - self.y1, self.x2 - self.x1


def sliding_windows(height: int, width: int, crop: int, stride: int) -> list[Window]:
    """All windows of a ``crop`` x ``crop`` slide with ``stride`` over an ``height`` x ``width`` image."""
    if crop <= 0 or stride <= 0:
        raise ValueError(f"crop ({crop}) and stride ({stride}) must be positive.")
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    windows = []
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * stride + crop, height)
            x2 = min(col * stride + crop, width)
            windows.append(Window(max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return windows


def whole_window(height: int, width: int) -> list[Window]:
    return [Window(0, height, 0, width)]


def average_window_scores(
    window_scores: list[torch.Tensor], windows: list[Window], height: int, width: int
) -> torch.Tensor:
    """Average per-window score maps into one ``(Q, height, width)`` map.

    ``window_scores[i]`` is ``(Q, h_i, w_i)`` on window ``i``'s token grid; it is bilinearly
    upsampled (``align_corners=False``) to the window's pixel size, summed into place and divided
    by how many windows cover each pixel.
    """
    num_queries = window_scores[0].shape[0]
    total = window_scores[0].new_zeros(num_queries, height, width)
    count = window_scores[0].new_zeros(1, height, width)
    for scores, win in zip(window_scores, windows):
        up = F.interpolate(scores[None], size=win.size, mode="bilinear", align_corners=False)[0]
        total[:, win.y1 : win.y2, win.x1 : win.x2] += up
        count[:, win.y1 : win.y2, win.x1 : win.x2] += 1
    return total / count
