"""Synthetic predictions with known masks: a ring (a hole), a two-part mask, a disc."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.structures import Instances, OVSegResult

# Large enough that the default tolerance (1 px) keeps polygon IoU >= 0.98: a simplified ring
# cuts chords of at most 1 px inside the boundary, ~perimeter px of area (a disc of radius 22
# keeps 0.988; one of radius 11 only 0.957).
H, W = 96, 128
CLASSES = ["ring", "pair", "disc"]


def scene_masks() -> np.ndarray:
    """``(3, H, W)`` bool: a square ring with a hole, two separate blocks, a disc."""
    yy, xx = np.mgrid[:H, :W]
    ring = np.zeros((H, W), bool)
    ring[8:60, 8:60] = True
    ring[24:44, 22:40] = False  # the hole
    pair = np.zeros((H, W), bool)
    pair[68:88, 8:40] = True
    pair[72:92, 80:104] = True  # second part, not touching the first
    disc = (yy - 32) ** 2 + (xx - 96) ** 2 < 22**2
    return np.stack([ring, pair, disc])


def boxes_of(masks: np.ndarray) -> np.ndarray:
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(boxes, dtype=np.float32)


@pytest.fixture
def instances() -> Instances:
    masks = scene_masks()
    return Instances(masks, boxes_of(masks), [0.9, 0.8, 0.7], [0, 1, 2], list(CLASSES))


@pytest.fixture
def semantic() -> OVSegResult:
    masks = scene_masks()
    sem = np.full((H, W), 255, dtype=np.int64)
    for index, mask in enumerate(masks):
        sem[mask] = index
    return OVSegResult(sem, list(CLASSES))


def filled(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled (what formats without holes can hold)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))
