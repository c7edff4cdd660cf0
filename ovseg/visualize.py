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


# --------------------------------------------------------------------------------------------
# Heat maps, masks, points and instances (HWC uint8 RGB in, HWC uint8 RGB out)
# --------------------------------------------------------------------------------------------
POINT_COLOURS = {1: (0, 200, 0), 0: (220, 0, 0), -1: (150, 150, 150)}  # positive, negative, neutral


def heat_map(values: np.ndarray) -> np.ndarray:
    """``(H, W)`` values in [0, 1] -> ``(H, W, 3)`` uint8 "jet" colours (blue low, red high)."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    channels = [np.clip(1.5 - np.abs(4.0 * v - c), 0.0, 1.0) for c in (3.0, 2.0, 1.0)]
    return (np.stack(channels, axis=-1) * 255).round().astype(np.uint8)


def blend_heat_map(image: np.ndarray, values: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """``image`` with the heat map of ``values`` ``(H, W)`` blended over it."""
    mixed = (1 - opacity) * image.astype(np.float32) + opacity * heat_map(values)
    return mixed.round().clip(0, 255).astype(np.uint8)


def draw_mask(
    image: np.ndarray,
    mask: np.ndarray,
    colour: Sequence[int] = (30, 144, 255),
    opacity: float = 0.5,
) -> np.ndarray:
    """``image`` with ``mask`` ``(H, W)`` bool filled in ``colour`` at ``opacity``."""
    out = image.astype(np.float32).copy()
    mask = np.asarray(mask, dtype=bool)
    out[mask] = (1 - opacity) * out[mask] + opacity * np.asarray(colour, dtype=np.float32)
    return out.round().clip(0, 255).astype(np.uint8)


def draw_points(image: np.ndarray, points, radius: int | None = None) -> np.ndarray:
    """Point prompts as dots with a white rim: green positive, red negative, grey neutral.

    ``points`` is a :class:`~ovseg.structures.PointPrompts` (``(x, y)`` input pixels, centres at
    ``i + 0.5``). Neutral points are drawn first so the others stay visible.
    """
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    r = radius if radius is not None else max(2, round(min(image.shape[:2]) / 80))
    order = np.argsort(np.asarray(points.labels) != -1, kind="stable")
    for i in order:
        x, y = (float(v) for v in points.coords[i])
        colour = POINT_COLOURS.get(int(points.labels[i]), POINT_COLOURS[-1])
        draw.ellipse([x - r - 1, y - r - 1, x + r + 1, y + r + 1], fill=(255, 255, 255))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return np.asarray(canvas)


def draw_instances(
    image: np.ndarray, instances, *, opacity: float = 0.5, boxes: bool = True, labels: bool = True
) -> np.ndarray:
    """Instance masks, boxes and ``name score`` captions over ``image``.

    Each instance gets its own colour; where masks overlap the higher-scored one shows (alone).
    Boxes are XYXY with exclusive ends (drawn on their last pixels).
    """
    colours = palette(max(len(instances), 1))
    order = np.argsort(instances.scores, kind="stable")  # lowest first, the best wins
    owner = np.full(image.shape[:2], -1, dtype=np.int64)
    for i in order:
        owner[instances.masks[i]] = i
    out = image.astype(np.float32).copy()
    covered = owner >= 0
    out[covered] = (1 - opacity) * out[covered] + opacity * colours[owner[covered]]
    canvas = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i in order:
        colour = tuple(int(c) for c in colours[i])
        x1, y1, x2, y2 = (float(v) for v in instances.boxes[i])
        if boxes and x2 > x1 and y2 > y1:
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=2)
        if labels:
            text = f"{instances.class_names[int(instances.labels[i])]} {instances.scores[i]:.2f}"
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            ty = max(y1 - (bottom - top) - 3, 0)
            draw.rectangle([x1, ty, x1 + right - left + 3, ty + bottom - top + 3], fill=colour)
            draw.text((x1 + 2, ty + 1 - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def referring_overlay(image: np.ndarray, result, *, opacity: float = 0.5) -> np.ndarray:
    """Two panels side by side: the mask with the points, and the similarity heat map with the
    points; the phrase and score are written above them."""
    left = draw_points(draw_mask(image, result.mask, opacity=opacity), result.points)
    right = draw_points(blend_heat_map(image, result.similarity), result.points)
    height, width = image.shape[:2]
    font = ImageFont.load_default()
    header = 16
    canvas = Image.new("RGB", (2 * width + 4, height + header), (255, 255, 255))
    canvas.paste(Image.fromarray(left), (0, header))
    canvas.paste(Image.fromarray(right), (width + 4, header))
    ImageDraw.Draw(canvas).text(
        (4, 2), f"{result.phrase}  (predicted IoU {result.score:.2f})", fill=(0, 0, 0), font=font
    )
    return np.asarray(canvas)
