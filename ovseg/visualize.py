"""Colour overlays with a legend for label maps (HWC uint8 RGB in, HWC uint8 RGB out)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ovseg.structures import UNLABELLED


def palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 distinct colours (golden-ratio hues), deterministic."""
    colours = []
    for index in range(num_classes):
        hue = (index * 0.618033988749895) % 1.0
        sat = 0.65 + 0.3 * ((index // 7) % 2)
        val = 0.95 - 0.25 * ((index // 3) % 2)
        colours.append([int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, sat, val)])
    return np.asarray(colours, dtype=np.uint8).reshape(num_classes, 3)


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    opacity: float = 0.5,
    legend: bool = True,
) -> np.ndarray:
    """Blend class colours over ``image`` (``(H, W, 3)`` uint8) and add a legend of present classes.

    ``labels`` is ``(H, W)`` with class indices; ``UNLABELLED`` pixels keep the image colour.
    The legend (a panel to the right) lists the classes present, largest area first.
    """
    colours = palette(len(class_names))
    valid = labels != UNLABELLED
    coloured = image.astype(np.float32).copy()
    coloured[valid] = (1 - opacity) * coloured[valid] + opacity * colours[labels[valid]]
    out = Image.fromarray(coloured.round().clip(0, 255).astype(np.uint8))
    if not legend:
        return np.asarray(out)
    counts = np.bincount(labels[valid].ravel(), minlength=len(class_names))
    present = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    font = ImageFont.load_default()
    row = 14
    width = 12 + max([len(class_names[i]) for i in present] or [4]) * 7 + 24
    height = max(out.height, 8 + row * len(present))
    canvas = Image.new("RGB", (out.width + width, height), (255, 255, 255))
    canvas.paste(out, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for slot, index in enumerate(present):
        y = 4 + slot * row
        x = out.width + 6
        draw.rectangle([x, y, x + 10, y + 10], fill=tuple(int(c) for c in colours[index]))
        draw.text((x + 16, y - 1), class_names[index], fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
