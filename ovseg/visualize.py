"""Pictures of results: class overlays with a legend, instances, heat maps, masks and points.

Every function takes and returns HWC uint8 RGB arrays. Label maps, masks, boxes and points are in
input-image pixels; a picture may be drawn at an integer ``scale`` (``scale`` picture pixels per
input pixel, see :func:`picture_scale`): label maps, masks and heat maps are enlarged by
nearest-neighbour (each input pixel becomes a ``scale x scale`` block), the photo bilinearly
(smooth rather than blocky; its colours still come from the input pixels only).

Colours belong to class *names*, not indices (:func:`class_colours`): the same class keeps its
colour across runs and vocabulary orders, and classes drawn in the same picture are at least
:data:`MIN_COLOUR_DISTANCE` apart in OKLab.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ovseg.structures import UNLABELLED

PICTURE_MIN_LONG_SIDE = 512  # pictures of smaller inputs are enlarged to at least this
MIN_COLOUR_DISTANCE = 0.06  # OKLab distance between any two classes of one picture (JND ~0.02)
LEGEND_MIN_HEIGHT = 360  # a legend may grow below a wide, short picture down to this height

# 128 colours chosen by farthest-point sampling in OKLab among sRGB colours with lightness
# 0.52-0.90 and chroma >= 0.09 (neither too dark, too pale nor grey under a 50% blend); any
# two are >= 0.061 apart. A class name hashes to a home slot of this table.
_TABLE_HEX = (
    "e82828 00ff00 0050ff ffc8ff 008008 e000ff 20b0d8 d0a800 805890 68f8e0 d880b8 00c040 "
    "986820 9070ff e0e830 d00090 9000e0 008090 ffa890 a8b0ff 689860 80c898 ff7000 ff70ff "
    "0088f8 ff4090 b86070 38d8ff c08858 90d800 b058c0 7880c0 ffd890 1868c0 78ff90 6850e0 "
    "ff00c8 c01850 c088ff ff98e0 c000c8 b84000 ff7880 90a800 00e088 b040ff b8e098 00b888 "
    "ffc000 00a000 7898ff 607838 a030a0 00a0a0 d860e0 a08800 d06000 a890d0 ff9810 d8c078 "
    "e80068 00e0c8 7018ff d05098 a8f800 c8c820 0090c8 ff68c0 e85868 985058 08d800 a070a0 "
    "90e8ff d0a0d8 d8a070 8048b8 b04080 4868ff 009058 a8b068 ff38ff 58b8b0 60b8ff d838c0 "
    "d8b8ff 8868d0 f098b0 5868a0 d08088 78c858 689000 8848ff ff4810 48f060 e08810 b07050 "
    "5870d0 00f8b8 ffb0d0 b868f8 e098ff a8e860 78a0d8 20a0f8 a040d0 50a848 90c8ff e07050 "
    "f00098 c80010 a878d8 78e0a0 6880f8 d04058 70d0d0 ff2858 f08860 e0d868 f06898 78b080 "
    "b89838 00f0ff 288068 5040f8 b000e8 00d0a0 ffb060 e880e0"
)
COLOUR_TABLE = np.array(
    [[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _TABLE_HEX.split()], dtype=np.uint8
)


# --------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------
def srgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` sRGB in [0, 255] -> ``(..., 3)`` OKLab (L in [0, 1]; Ottosson 2020)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_lms = np.array(
        [
            [0.4122214708, 0.5363325363, 0.0514459929],
            [0.2119034982, 0.6806995451, 0.1073969566],
            [0.0883024619, 0.2817188376, 0.6299787005],
        ]
    )
    to_lab = np.array(
        [
            [0.2104542553, 0.7936177850, -0.0040720468],
            [1.9779984951, -2.4285922050, 0.4505937099],
            [0.0259040371, 0.7827717662, -0.8086757660],
        ]
    )
    return np.cbrt(linear @ to_lms.T) @ to_lab.T


_TABLE_LAB = srgb_to_oklab(COLOUR_TABLE)


def colour_slot(name: str) -> int:
    """The home slot in :data:`COLOUR_TABLE` of a class name (blake2b of the stripped,
    lower-cased name; the same on every machine and run, unlike ``hash``)."""
    digest = hashlib.blake2b(name.strip().lower().encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % len(COLOUR_TABLE)


def class_colours(names: Sequence[str]) -> np.ndarray:
    """``(len(names), 3)`` uint8 colours for the classes drawn together in one picture.

    Each name takes its home slot (:func:`colour_slot`) unless a class already placed is closer
    than :data:`MIN_COLOUR_DISTANCE` in OKLab; then the next slots are probed in table order.
    Names are placed in (home slot, name) order, so the result does not depend on the order of
    ``names``; names equal up to case and surrounding space share a colour. Beyond 128 classes
    colours repeat (the least crowded ones first).
    """
    keys = sorted({n.strip().lower() for n in names}, key=lambda k: (colour_slot(k), k))
    taken: list[int] = []
    chosen: dict[str, int] = {}
    for key in keys:
        home = colour_slot(key)
        probe = [(home + step) % len(COLOUR_TABLE) for step in range(len(COLOUR_TABLE))]
        if taken:
            gaps = np.linalg.norm(_TABLE_LAB[probe, None] - _TABLE_LAB[None, taken], axis=-1)
            nearest = gaps.min(axis=1)
            free = np.flatnonzero(nearest >= MIN_COLOUR_DISTANCE)
            slot = probe[int(free[0])] if len(free) else probe[int(np.argmax(nearest))]
        else:
            slot = home
        taken.append(slot)
        chosen[key] = slot
    out = np.zeros((len(names), 3), dtype=np.uint8)
    for i, name in enumerate(names):
        out[i] = COLOUR_TABLE[chosen[name.strip().lower()]]
    return out


def text_colour(fill: Sequence[int]) -> tuple[int, int, int]:
    """Black on light fills, white on dark ones (OKLab lightness 0.7 as the cut)."""
    return (0, 0, 0) if srgb_to_oklab(np.asarray(fill))[0] > 0.7 else (255, 255, 255)


# --------------------------------------------------------------------------------------------
# Sizes, fonts, enlarging
# --------------------------------------------------------------------------------------------
def picture_scale(shape: Sequence[int], min_long_side: int = PICTURE_MIN_LONG_SIDE) -> int:
    """The smallest integer factor that brings the long side of ``shape`` ``(H, W, ...)`` to at
    least ``min_long_side`` (1 for inputs that are large enough)."""
    long_side = max(int(shape[0]), int(shape[1]), 1)
    return max(1, math.ceil(min_long_side / long_side))


def font_size(long_side: int) -> int:
    """Text height in pixels for a picture whose long side is ``long_side``: about 1/36 of it,
    at least 11 (readable), at most 32."""
    return int(np.clip(round(long_side / 36), 11, 32))


@lru_cache(maxsize=32)
def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` pixels (the fixed bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def enlarge_image(image: np.ndarray, scale: int) -> np.ndarray:
    """``(H, W, 3)`` photo -> ``(scale H, scale W, 3)``, bilinear."""
    if scale == 1:
        return np.ascontiguousarray(image)
    height, width = image.shape[:2]
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(
        (width * scale, height * scale), Image.BILINEAR
    )
    return np.asarray(resized)


def enlarge_nearest(values: np.ndarray, scale: int) -> np.ndarray:
    """``(H, W, ...)`` labels, masks or values -> ``(scale H, scale W, ...)``, nearest."""
    if scale == 1:
        return values
    return np.repeat(np.repeat(values, scale, axis=0), scale, axis=1)


def _text_size(font, text: str) -> tuple[int, int]:
    left, _, right, _ = font.getbbox(text)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (11, 0)
    return int(math.ceil(right - min(left, 0))), int(ascent + descent)


def _fit_text(font, text: str, max_width: int) -> str:
    """``text``, shortened with an ellipsis until it is at most ``max_width`` pixels wide."""
    if _text_size(font, text)[0] <= max_width:
        return text
    while len(text) > 1 and _text_size(font, text + "…")[0] > max_width:
        text = text[:-1]
    return text + "…"


def _side_by_side(image: np.ndarray, picture: np.ndarray, gap: int) -> np.ndarray:
    """``image | picture`` on white with a ``gap`` pixels wide white strip between them."""
    height = max(image.shape[0], picture.shape[0])
    canvas = np.full((height, image.shape[1] + gap + picture.shape[1], 3), 255, np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    canvas[: picture.shape[0], image.shape[1] + gap :] = picture
    return canvas


# --------------------------------------------------------------------------------------------
# Semantic overlays with a legend
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LegendItem:
    """One legend row: class ``index`` and ``name``, its pure ``colour``, the colour ``shown``
    in the swatch (the mean of that class's overlay pixels as drawn), its area share and the
    swatch rectangle ``(x0, y0, x1, y1)`` (exclusive ends) in picture pixels."""

    index: int
    name: str
    colour: tuple[int, int, int]
    shown: tuple[int, int, int]
    area_fraction: float
    swatch: tuple[int, int, int, int]


@dataclass(frozen=True)
class SemanticPicture:
    """A rendered overlay: the ``array``, the legend rows drawn, how many present classes the
    legend left out (``"+K more"``), where the overlay panel lies (``(x0, y0)`` of its top-left
    picture pixel) and the ``scale`` (picture pixels per input pixel)."""

    array: np.ndarray
    legend: list[LegendItem]
    more: int
    overlay_origin: tuple[int, int]
    scale: int


def render_semantic(
    image: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    opacity: float = 0.5,
    legend: bool = True,
    scale: int = 1,
    side_by_side: bool = False,
) -> SemanticPicture:
    """Blend class colours over ``image`` (``(H, W, 3)`` uint8) with a legend panel on the right.

    ``labels`` is ``(H, W)`` with class indices; ``UNLABELLED`` pixels keep the photo. The
    picture is ``scale`` times the input; with ``side_by_side`` the photo comes first
    (``photo | overlay | legend``). The legend lists the present classes, largest area first,
    each with a swatch of its mean drawn colour and its area share, in one column, two when
    long, and the first ones with ``"+K more"`` when even two columns do not fit.
    """
    labels = np.asarray(labels)
    valid = labels != UNLABELLED
    counts = np.bincount(labels[valid].ravel(), minlength=len(class_names))
    present = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    colours = np.zeros((len(class_names), 3), dtype=np.float32)
    if present:
        colours[present] = class_colours([class_names[i] for i in present])
    photo = enlarge_image(image, scale)
    labels_up = enlarge_nearest(labels, scale)
    valid_up = labels_up != UNLABELLED
    blended = photo.astype(np.float32)
    blended[valid_up] = (1 - opacity) * blended[valid_up] + opacity * colours[labels_up[valid_up]]
    drawn = blended.round().clip(0, 255).astype(np.uint8)
    gap = 2 * font_size(max(drawn.shape[:2])) // 3
    panels = _side_by_side(photo, drawn, gap) if side_by_side else drawn
    origin = (photo.shape[1] + gap, 0) if side_by_side else (0, 0)
    if not legend:
        return SemanticPicture(panels, [], 0, origin, scale)
    # mean drawn colour per class, over the picture's pixels of that class
    flat, pixels = labels_up[valid_up].ravel(), drawn[valid_up]
    sums = [np.bincount(flat, weights=pixels[:, c], minlength=len(class_names)) for c in range(3)]
    area = np.bincount(flat, minlength=len(class_names)).astype(np.float64)
    total = float(labels.size)
    entries = [
        (
            i,
            tuple(int(v) for v in colours[i]),
            tuple(int(round(s[i] / area[i])) for s in sums),
            counts[i] / total,
        )
        for i in present
    ]
    canvas, items, more = _draw_legend(panels, class_names, entries)
    return SemanticPicture(canvas, items, more, origin, scale)


def _draw_legend(panels: np.ndarray, class_names: Sequence[str], entries: list) -> tuple:
    """``panels`` with the legend panel to the right; returns (array, items, more)."""
    height = panels.shape[0]
    size = font_size(max(panels.shape[:2]))
    font = load_font(size)
    row, pad, swatch = round(1.5 * size), size, size
    rows_fit = max(1, (max(height, LEGEND_MIN_HEIGHT) - 2 * pad) // row)
    n = len(entries)
    if n <= rows_fit:
        columns, shown, rows = 1, n, max(n, 1)
    elif n <= 2 * rows_fit:
        columns, shown, rows = 2, n, math.ceil(n / 2)
    else:
        columns, shown, rows = 2, 2 * rows_fit - 1, rows_fit
    more = n - shown
    max_name = 16 * size  # long names are shortened with an ellipsis
    texts = [
        (_fit_text(font, class_names[i], max_name), f"{100 * share:.1f}%")
        for i, _, _, share in entries[:shown]
    ]
    space = _text_size(font, " ")[0]
    widths = [_text_size(font, a)[0] + space + _text_size(font, b)[0] for a, b in texts]
    if more:
        widths.append(_text_size(font, f"+{more} more")[0] - swatch - pad // 2)
    if not entries:
        widths.append(_text_size(font, "no class")[0])
    column = swatch + pad // 2 + max(widths)
    width = pad + columns * column + (columns - 1) * pad + pad
    canvas = Image.new("RGB", (panels.shape[1] + width, max(height, 2 * pad + rows * row)), "white")
    canvas.paste(Image.fromarray(panels), (0, 0))
    draw = ImageDraw.Draw(canvas)
    items = []
    left = panels.shape[1] + pad
    for slot, ((index, colour, shown_colour, share), (name, percent)) in enumerate(
        zip(entries[:shown], texts, strict=True)
    ):
        x = left + (slot // rows) * (column + pad)
        y = pad + (slot % rows) * row
        box = (x, y, x + swatch, y + swatch)
        draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=shown_colour)
        draw.text((x + swatch + pad // 2, y), name, fill=(0, 0, 0), font=font)
        name_width = _text_size(font, name)[0] + space
        draw.text((x + swatch + pad // 2 + name_width, y), percent, fill=(96, 96, 96), font=font)
        items.append(LegendItem(index, class_names[index], colour, shown_colour, share, box))
    if more:
        x = left + (shown // rows) * (column + pad)
        y = pad + (shown % rows) * row
        draw.text((x, y), f"+{more} more", fill=(0, 0, 0), font=font)
    if not entries:
        draw.text((left, pad), "no class", fill=(0, 0, 0), font=font)
    return np.asarray(canvas), items, more


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    opacity: float = 0.5,
    legend: bool = True,
    scale: int = 1,
    side_by_side: bool = False,
) -> np.ndarray:
    """The array of :func:`render_semantic` (without a legend: ``(scale H, scale W, 3)``)."""
    return render_semantic(
        image,
        labels,
        class_names,
        opacity=opacity,
        legend=legend,
        scale=scale,
        side_by_side=side_by_side,
    ).array


# --------------------------------------------------------------------------------------------
# Heat maps, masks, points (HWC uint8 RGB in, HWC uint8 RGB out)
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


def draw_points(image: np.ndarray, points, radius: int | None = None, *, scale: int = 1):
    """Point prompts as dots with a white rim: green positive, red negative, grey neutral.

    ``points`` is a :class:`~ovseg.structures.PointPrompts` (``(x, y)`` input pixels, centres at
    ``i + 0.5``); ``image`` is the picture at ``scale`` (coordinates are multiplied by it).
    Neutral points are drawn first so the others stay visible.
    """
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    r = radius if radius is not None else max(2, round(min(image.shape[:2]) / 80))
    order = np.argsort(np.asarray(points.labels) != -1, kind="stable")
    for i in order:
        x, y = (scale * float(v) for v in points.coords[i])
        colour = POINT_COLOURS.get(int(points.labels[i]), POINT_COLOURS[-1])
        draw.ellipse([x - r - 1, y - r - 1, x + r + 1, y + r + 1], fill=(255, 255, 255))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return np.asarray(canvas)


# --------------------------------------------------------------------------------------------
# Instances
# --------------------------------------------------------------------------------------------
def place_captions(
    sizes: Sequence[tuple[int, int]],
    boxes: Sequence[Sequence[float]],
    width: int,
    height: int,
) -> list[tuple[int, int, int, int] | None]:
    """Greedy caption placement, in the given order (put the most important first).

    ``sizes`` are ``(w, h)`` captions and ``boxes`` the XYXY boxes they name, both in picture
    pixels. Each caption tries, left-aligned with its box (shifted to stay inside the picture):
    above the box, inside its top, below it, inside its bottom, then further above and below;
    the first place inside the picture that overlaps no earlier caption wins. Returns
    ``(x0, y0, x1, y1)`` (exclusive ends) per caption, or None where no place was free or the
    caption is larger than the picture.
    """
    placed: list[tuple[int, int, int, int]] = []
    out: list[tuple[int, int, int, int] | None] = []
    for (w, h), box in zip(sizes, boxes, strict=True):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        if w > width or h > height:
            out.append(None)
            continue
        x = min(max(x1, 0), width - w)
        tops = [y1 - h, y1, y2, y2 - h] + [
            t for k in (1, 2, 3) for t in (y1 - (k + 1) * h, y2 + k * h)
        ]
        found = None
        for top in tops:
            rect = (x, top, x + w, top + h)
            if top < 0 or top + h > height:
                continue
            if all(
                rect[2] <= o[0] or o[2] <= rect[0] or rect[3] <= o[1] or o[3] <= rect[1]
                for o in placed
            ):
                found = rect
                break
        if found is not None:
            placed.append(found)
        out.append(found)
    return out


@dataclass(frozen=True)
class Caption:
    """A ``name score`` caption drawn for instance ``index`` at ``box`` ``(x0, y0, x1, y1)``
    (exclusive ends, picture pixels)."""

    index: int
    text: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class InstancePicture:
    """A rendered instance picture: the ``array``, the captions drawn, how many captions found
    no free place (``hidden``), the overlay panel's top-left ``(x0, y0)`` and the ``scale``."""

    array: np.ndarray
    captions: list[Caption]
    hidden: int
    overlay_origin: tuple[int, int]
    scale: int


def _outline(mask: np.ndarray, thickness: int) -> np.ndarray:
    """The pixels of ``mask`` within ``thickness`` of its border (image edges count)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return mask
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.pad(mask[top:bottom, left:right], thickness).astype(np.uint8) * 255
    eroded = np.asarray(Image.fromarray(crop).filter(ImageFilter.MinFilter(2 * thickness + 1)))
    edge = np.zeros_like(mask)
    inner = eroded[thickness:-thickness, thickness:-thickness] > 0
    edge[top:bottom, left:right] = mask[top:bottom, left:right] & ~inner
    return edge


def render_instances(
    image: np.ndarray,
    instances,
    *,
    opacity: float = 0.5,
    boxes: bool = True,
    labels: bool = True,
    scale: int = 1,
    side_by_side: bool = False,
) -> InstancePicture:
    """Instance masks with contours, boxes and ``name score`` captions over ``image``.

    Colours follow the class names (:func:`class_colours`); where masks overlap the
    higher-scored instance shows. Each mask is filled at ``opacity`` and outlined in its pure
    colour; boxes are XYXY with exclusive ends. Captions are placed best score first by
    :func:`place_captions`, inside the picture and never over each other; their text size
    follows the picture (:func:`font_size`). With ``side_by_side``: ``photo | instances``.
    """
    photo = enlarge_image(image, scale)
    size = font_size(max(photo.shape[:2]))
    thickness = max(1, size // 7)
    names = [instances.class_names[int(label)] for label in instances.labels]
    colours = class_colours(names).astype(np.float32) if names else np.zeros((0, 3), np.float32)
    order = np.argsort(instances.scores, kind="stable")  # lowest first, the best wins
    owner = np.full(image.shape[:2], -1, dtype=np.int64)
    for i in order:
        owner[instances.masks[i]] = i
    owner = enlarge_nearest(owner, scale)
    out = photo.astype(np.float32)
    covered = owner >= 0
    out[covered] = (1 - opacity) * out[covered] + opacity * colours[owner[covered]]
    for i in order:
        out[_outline(enlarge_nearest(instances.masks[i], scale), thickness)] = colours[i]
    canvas = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = load_font(size)
    pictured = scale * np.asarray(instances.boxes, dtype=np.float64).reshape(-1, 4)
    if boxes:
        for i in order:
            x1, y1, x2, y2 = pictured[i]
            if x2 > x1 and y2 > y1:
                colour = tuple(int(c) for c in colours[i])
                draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=thickness)
    captions: list[Caption] = []
    hidden = 0
    if labels and len(instances):
        pad = max(1, size // 6)
        best_first = [int(i) for i in order[::-1]]
        texts = [
            _fit_text(font, f"{names[i]} {instances.scores[i]:.2f}", canvas.width - 2 * pad)
            for i in best_first
        ]
        sizes = [(w + 2 * pad, h + 2 * pad) for w, h in (_text_size(font, t) for t in texts)]
        spots = place_captions(sizes, pictured[best_first], canvas.width, canvas.height)
        for i, text, spot in zip(best_first, texts, spots, strict=True):
            if spot is None:
                hidden += 1
                continue
            fill = tuple(int(c) for c in colours[i])
            draw.rectangle([spot[0], spot[1], spot[2] - 1, spot[3] - 1], fill=fill)
            draw.text((spot[0] + pad, spot[1] + pad), text, fill=text_colour(fill), font=font)
            captions.append(Caption(i, text, spot))
    drawn = np.asarray(canvas)
    if side_by_side:
        gap = 2 * size // 3
        return InstancePicture(
            _side_by_side(photo, drawn, gap), captions, hidden, (photo.shape[1] + gap, 0), scale
        )
    return InstancePicture(drawn, captions, hidden, (0, 0), scale)


def draw_instances(
    image: np.ndarray,
    instances,
    *,
    opacity: float = 0.5,
    boxes: bool = True,
    labels: bool = True,
    scale: int = 1,
    side_by_side: bool = False,
) -> np.ndarray:
    """The array of :func:`render_instances` (``(scale H, scale W, 3)`` without
    ``side_by_side``)."""
    return render_instances(
        image,
        instances,
        opacity=opacity,
        boxes=boxes,
        labels=labels,
        scale=scale,
        side_by_side=side_by_side,
    ).array


# --------------------------------------------------------------------------------------------
# Referring
# --------------------------------------------------------------------------------------------
def referring_overlay(
    image: np.ndarray,
    result,
    *,
    opacity: float = 0.5,
    scale: int = 1,
    side_by_side: bool = False,
) -> np.ndarray:
    """Panels side by side: the mask with the points and the similarity heat map with the
    points (``photo | mask | heat map`` with ``side_by_side``), each ``scale`` times the input;
    the phrase and score are written above them."""
    photo = enlarge_image(image, scale)
    left = draw_points(
        draw_mask(photo, enlarge_nearest(result.mask, scale), opacity=opacity),
        result.points,
        scale=scale,
    )
    heat = blend_heat_map(photo, enlarge_nearest(result.similarity, scale))
    right = draw_points(heat, result.points, scale=scale)
    panels = [photo, left, right] if side_by_side else [left, right]
    size = font_size(max(photo.shape[:2]))
    font = load_font(size)
    gap, header = 4 * scale, size + size // 2
    height, width = photo.shape[:2]
    canvas = Image.new("RGB", (len(panels) * (width + gap) - gap, height + header), "white")
    for k, panel in enumerate(panels):
        canvas.paste(Image.fromarray(panel), (k * (width + gap), header))
    text = _fit_text(font, f"{result.phrase}  (predicted IoU {result.score:.2f})", canvas.width - 8)
    ImageDraw.Draw(canvas).text((4, size // 4), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


# --------------------------------------------------------------------------------------------
# Reasoning (READ)
# --------------------------------------------------------------------------------------------
def reasoning_overlay(
    image: np.ndarray,
    result,
    *,
    opacity: float = 0.5,
    scale: int = 1,
    side_by_side: bool = False,
) -> np.ndarray:
    """The masks of a :class:`~ovseg.structures.ReasoningResult`, one colour each, with their
    SasP points (``photo | masks`` with ``side_by_side``), ``scale`` times the input; the
    answer is written above. An answer without a mask shows the photo alone."""
    photo = enlarge_image(image, scale)
    panel = photo
    colours = class_colours([f"mask {k}" for k in range(len(result))])
    for k in range(len(result)):
        panel = draw_mask(
            panel, enlarge_nearest(result.masks[k], scale), colour=colours[k], opacity=opacity
        )
    for k in range(len(result)):
        panel = draw_points(panel, result.points[k], scale=scale)
    panels = [photo, panel] if side_by_side else [panel]
    size = font_size(max(photo.shape[:2]))
    font = load_font(size)
    gap, header = 4 * scale, size + size // 2
    height, width = photo.shape[:2]
    canvas = Image.new("RGB", (len(panels) * (width + gap) - gap, height + header), "white")
    for k, picture in enumerate(panels):
        canvas.paste(Image.fromarray(picture), (k * (width + gap), header))
    scores = ", ".join(f"{float(s):.2f}" for s in result.scores)
    text = result.answer + (f"  (predicted IoU {scores})" if len(result) else "  (no mask)")
    ImageDraw.Draw(canvas).text(
        (4, size // 4), _fit_text(font, text, canvas.width - 8), fill=(0, 0, 0), font=font
    )
    return np.asarray(canvas)
