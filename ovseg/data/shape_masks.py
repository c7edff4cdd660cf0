"""Rasterised masks of the 8 synthetic shapes (PIL ImageDraw, no antialiasing).

Coordinates are image pixels, x right and y down; ``center`` is (x, y); ``size`` is the shape's
outer diameter in pixels; ``angle`` is a rotation in degrees (counter-clockwise on screen).
Shapes whose rotation would make them look like another shape (a square turned 45 degrees is a
diamond) only get small rotations; ``sample_angle`` knows which.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Largest rotation (degrees) drawn for each shape; None = any angle (symmetry makes it free).
MAX_ROTATION: dict[str, float | None] = {
    "circle": 0.0,
    "square": 15.0,
    "triangle": None,
    "star": None,
    "ring": 0.0,
    "cross": 15.0,
    "diamond": 15.0,
    "hexagon": None,
}


def sample_angle(shape: str, rng: np.random.Generator) -> float:
    """A random rotation in degrees suitable for ``shape``."""
    limit = MAX_ROTATION[shape]
    if limit is None:
        return float(rng.uniform(0.0, 360.0))
    if limit == 0.0:
        return 0.0
    return float(rng.uniform(-limit, limit))


def _regular(n: int, radius: float, start_deg: float = -90.0) -> np.ndarray:
    t = np.deg2rad(start_deg + 360.0 / n * np.arange(n))
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _outline(shape: str, r: float) -> np.ndarray | None:
    """Polygon vertices (N, 2) of ``shape`` with outer radius ``r`` centred at the origin."""
    if shape == "square":
        a = 0.78 * r
        return np.array([[-a, -a], [a, -a], [a, a], [-a, a]])
    if shape == "triangle":
        return _regular(3, r)
    if shape == "star":
        outer = _regular(5, r)
        inner = _regular(5, 0.45 * r, start_deg=-90.0 + 36.0)
        return np.stack([outer, inner], axis=1).reshape(-1, 2)
    if shape == "cross":
        w, e = 0.32 * r, 0.92 * r
        return np.array(
            [
                [-w, -e],
                [w, -e],
                [w, -w],
                [e, -w],
                [e, w],
                [w, w],
                [w, e],
                [-w, e],
                [-w, w],
                [-e, w],
                [-e, -w],
                [-w, -w],
            ]
        )
    if shape == "diamond":
        return np.array([[0, -r], [0.62 * r, 0], [0, r], [-0.62 * r, 0]])
    if shape == "hexagon":
        return _regular(6, 0.96 * r, start_deg=0.0)
    return None


def shape_mask(
    shape: str,
    center: tuple[float, float],
    size: float,
    angle: float,
    height: int,
    width: int,
) -> np.ndarray:
    """Boolean (H, W) mask of ``shape`` drawn at ``center`` (x, y) with diameter ``size`` px."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = center
    r = size / 2.0
    if shape in ("circle", "ring"):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
        if shape == "ring":
            ri = 0.55 * r
            draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=0)
    else:
        pts = _outline(shape, r)
        if pts is None:
            raise ValueError(f"Unknown shape {shape!r}.")
        t = np.deg2rad(-angle)  # y points down, so negate for a counter-clockwise turn
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        pts = pts @ rot.T + np.array([cx, cy])
        draw.polygon([tuple(p) for p in pts.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)
