"""Sliding-window geometry and the averaging of per-window score maps.

Windows follow mmseg's ``slide_inference``: ``ceil((H - crop) / stride) + 1`` rows (at least one),
each window at ``i * stride`` and shifted back inside the image at the far edge. Images smaller
than the crop give one window covering the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError


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
    count = torch.zeros(height, width, dtype=torch.int32)
    # windows with the same grid and pixel size are upsampled in one call (same arithmetic)
    groups: dict[tuple, list[int]] = {}
    for index, (scores, win) in enumerate(zip(window_scores, windows)):
        groups.setdefault((tuple(scores.shape), win.size), []).append(index)
    for (_, size), members in groups.items():
        stacked = torch.stack([window_scores[i] for i in members])
        upsampled = F.interpolate(stacked, size=size, mode="bilinear", align_corners=False)
        for i, up in zip(members, upsampled):
            win = windows[i]
            total[:, win.y1 : win.y2, win.x1 : win.x2] += up
            count[win.y1 : win.y2, win.x1 : win.x2] += 1
    return total.div_(count.to(device=total.device, dtype=total.dtype))


def _integer(settings: dict, key: str, minimum: int, allow_none: bool = False) -> None:
    value = settings.get(key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"inference.{key} must be an integer >= {minimum}, got {value!r}.")
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number != float(value) or number < minimum:
        raise ConfigError(f"inference.{key} must be an integer >= {minimum}, got {value!r}.")
    settings[key] = number


def check_window_settings(settings: dict, patch_size: int) -> dict:
    """Validate (in place) and return an ``inference`` block of a windowed dense pipeline.

    ``mode`` is ``slide`` or ``whole``; ``crop_size`` is at least one patch and ``stride``
    between 1 and ``crop_size`` (a larger stride would leave pixels no window covers);
    ``short_side`` / ``max_long_side`` are None or at least one patch; ``batch_size`` >= 1.

    Raises:
        ConfigError: a value of the wrong type or range, naming the key and what is allowed.
    """
    if settings.get("mode") not in ("slide", "whole"):
        raise ConfigError(
            f"inference.mode must be 'slide' or 'whole', not {settings.get('mode')!r}."
        )
    for key in ("short_side", "max_long_side"):
        if key in settings:
            _integer(settings, key, patch_size, allow_none=True)
    _integer(settings, "batch_size", 1)
    if settings["mode"] == "slide":
        _integer(settings, "crop_size", patch_size)
        _integer(settings, "stride", 1)
        if settings["stride"] > settings["crop_size"]:
            raise ConfigError(
                f"inference.stride ({settings['stride']}) is larger than the window "
                f"(crop_size {settings['crop_size']}): pixels between windows would get no score. "
                "Use a stride <= crop_size."
            )
    return settings


def windows_for(height: int, width: int, mode: str, crop_size: int, stride: int) -> list[Window]:
    """The windows of ``mode``: ``slide`` (:func:`sliding_windows`) or ``whole`` (one window)."""
    if mode == "whole":
        return whole_window(height, width)
    if mode == "slide":
        return sliding_windows(height, width, int(crop_size), int(stride))
    raise ConfigError(f"Inference mode must be 'slide' or 'whole', not {mode!r}.")


@torch.no_grad()
def slide_inference(
    forward,
    image: torch.Tensor,
    *,
    mode: str = "slide",
    crop_size: int = 512,
    stride: int = 341,
    batch_size: int = 8,
) -> torch.Tensor:
    """Logits ``(K, H, W)`` of one normalised image ``(1, 3, H, W)``, as mmseg's inference.

    ``forward`` maps a batch of crops ``(n, 3, h, w)`` to logits ``(n, K, h', w')``. Each
    window's logits are upsampled (bilinear) to the window and averaged where windows overlap
    (:func:`average_window_scores`); ``whole`` runs one pass on the image.
    """
    windows = windows_for(image.shape[-2], image.shape[-1], mode, crop_size, stride)
    step = max(1, int(batch_size))
    scores: list[torch.Tensor] = []
    for start in range(0, len(windows), step):
        chunk = windows[start : start + step]
        scores.extend(forward(torch.cat([image[:, :, w.y1 : w.y2, w.x1 : w.x2] for w in chunk])))
    return average_window_scores(
        [s.float() for s in scores], windows, image.shape[-2], image.shape[-1]
    )
