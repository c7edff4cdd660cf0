"""Sliding-window geometry, averaging and keep-ratio resizing."""

from __future__ import annotations

import torch

from ovseg.inference.resize import rescale_size
from ovseg.inference.sliding import Window, average_window_scores, sliding_windows


def test_windows_cover_and_shift_back_inside():
    windows = sliding_windows(336, 448, crop=224, stride=112)
    assert len(windows) == 2 * 3
    assert all(w.size == (224, 224) for w in windows)
    assert windows[-1] == Window(112, 336, 224, 448)
    cover = torch.zeros(336, 448)
    for w in windows:
        cover[w.y1 : w.y2, w.x1 : w.x2] += 1
    assert cover.min() >= 1
    # non-multiple sizes: last window is shifted back to end at the border
    odd = sliding_windows(300, 250, crop=224, stride=112)
    assert odd[-1] == Window(76, 300, 26, 250) and len(odd) == 4


def test_small_image_gives_one_window():
    assert sliding_windows(100, 150, crop=224, stride=112) == [Window(0, 100, 0, 150)]


def test_average_counts_overlaps():
    windows = [Window(0, 4, 0, 4), Window(0, 4, 2, 6)]
    scores = [torch.ones(1, 2, 2), 3 * torch.ones(1, 2, 2)]
    avg = average_window_scores(scores, windows, 4, 6)
    assert torch.allclose(avg[0, :, :2], torch.ones(4, 2))
    assert torch.allclose(avg[0, :, 2:4], 2 * torch.ones(4, 2))
    assert torch.allclose(avg[0, :, 4:], 3 * torch.ones(4, 2))


def test_rescale_like_mmcv():
    assert rescale_size(375, 500, 336, 2048) == (336, 448)
    assert rescale_size(512, 683, 448, 2048) == (448, 598)
    assert rescale_size(100, 10000, 336, 2048) == (20, 2048)  # long side capped
    assert rescale_size(20, 30, None) == (20, 30)
