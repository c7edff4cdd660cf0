"""Binary masks as polygons, traced with OpenCV (``cv2.findContours``, two-level hierarchy).

Two coordinate frames, because readers rasterise polygons in two ways:

- ``"edge"``: pixel ``(i, j)`` is the square ``[j, j + 1) x [i, i + 1)`` and a pixel belongs to a
  polygon when its centre is inside (pycocotools, hence COCO and CVAT/Datumaro). The mask is
  traced at twice its resolution and mapped back, so each ring runs a quarter pixel inside the
  mask's outer pixel edges: with ``tolerance=0`` pycocotools gives the mask back exactly.
- ``"centre"``: ``(x, y)`` integer points are pixel centres and a polygon's boundary pixels are
  inside it (``cv2.fillPoly`` as Ultralytics draws YOLO segments, PIL's ``ImageDraw.polygon`` as
  labelme draws shapes). Rings pass through the mask's boundary pixels.

Points are ``(x, y)`` in input-image pixels. Every connected part of a mask is its own outer ring;
holes are separate rings flagged ``hole`` (formats without holes keep the outer rings only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ovseg.errors import MissingDependencyError

try:
    import cv2
except ImportError as exc:  # an optional dependency: the ``export`` extra
    raise MissingDependencyError(
        "Exporting polygons needs OpenCV: pip install 'ovseg[export]' (opencv-python-headless)."
    ) from exc

Frame = Literal["edge", "centre"]


@dataclass
class Ring:
    """One closed polygon: ``points`` ``(K, 2)`` float64 ``(x, y)``, K >= 3; ``hole`` when it
    bounds a hole of the outer ring ``parent`` (index into the same list; -1 for outer rings)."""

    points: np.ndarray
    hole: bool
    parent: int = -1


def _box_ring(points: np.ndarray) -> np.ndarray:
    """The 4 corners of the points' bounding box (a 1- or 2-point contour of a thin part)."""
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def mask_to_polygons(mask: np.ndarray, tolerance: float = 1.0, frame: Frame = "edge") -> list[Ring]:
    """Trace ``(H, W)`` bool ``mask`` into rings (outer rings and their holes).

    Args:
        mask: ``(H, W)`` bool (or 0/1) mask in input-image pixels.
        tolerance: ``cv2.approxPolyDP`` epsilon in input-image pixels (0 keeps every contour
            point: exact in the ``"edge"`` frame).
        frame: ``"edge"`` or ``"centre"`` (see the module docstring).

    Returns:
        Rings in OpenCV's order (each outer ring before its holes); empty for an empty mask.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    mask = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return []
    # Trace only the mask's box (plus a 1-pixel margin) to keep large images cheap.
    top, left = max(int(ys.min()) - 1, 0), max(int(xs.min()) - 1, 0)
    crop = mask[top : int(ys.max()) + 2, left : int(xs.max()) + 2].astype(np.uint8)
    scale = 2 if frame == "edge" else 1
    if scale == 2:
        crop = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return []
    rings: list[Ring] = []
    index_of: dict[int, int] = {}
    for k, (contour, (_, _, _, parent)) in enumerate(zip(contours, hierarchy[0], strict=True)):
        if tolerance > 0:
            contour = cv2.approxPolyDP(contour, tolerance * scale, True)
        points = contour.reshape(-1, 2).astype(np.float64)
        if scale == 2:
            points = (points + 0.5) / 2.0  # sub-pixel centre -> edge frame, a quarter pixel in
        points += (left, top)
        if len(points) < 3:
            points = _box_ring(points)
        hole = parent >= 0
        if hole and parent not in index_of:
            continue
        index_of[k] = len(rings)
        rings.append(Ring(points, hole, index_of[parent] if hole else -1))
    return rings


def outer_rings(
    mask: np.ndarray, tolerance: float = 1.0, frame: Frame = "edge"
) -> list[np.ndarray]:
    """The outer rings of ``mask`` only (holes filled): one ``(K, 2)`` array per connected part."""
    return [r.points for r in mask_to_polygons(mask, tolerance, frame) if not r.hole]
