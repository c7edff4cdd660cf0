"""Mask tracing: exact in the edge frame at tolerance 0, holes and parts as separate rings."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ovseg.export.polygons import mask_to_polygons, outer_rings

from .conftest import H, W, filled, iou, scene_masks


def _coco_raster(rings, height, width) -> np.ndarray:
    rles = mask_utils.frPyObjects([r.ravel().tolist() for r in rings], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_edge_frame_is_exact_for_pycocotools(index):
    mask = scene_masks()[index]
    rings = mask_to_polygons(mask, tolerance=0, frame="edge")
    outer = [r.points for r in rings if not r.hole]
    holes = [r.points for r in rings if r.hole]
    raster = _coco_raster(outer, H, W)
    if holes:
        raster &= ~_coco_raster(holes, H, W)
    assert np.array_equal(raster, mask)


def test_hole_and_parts_are_separate_rings():
    ring, pair, _ = scene_masks()
    traced = mask_to_polygons(ring, tolerance=1.0)
    assert [r.hole for r in traced] == [False, True] and traced[1].parent == 0
    assert len(outer_rings(pair)) == 2


def test_centre_frame_fills_back_with_cv2():
    for mask in scene_masks():
        raster = np.zeros((H, W), np.uint8)
        rings = outer_rings(mask, tolerance=0, frame="centre")
        cv2.fillPoly(raster, [np.round(r).astype(np.int32) for r in rings], 1)
        assert np.array_equal(raster.astype(bool), filled(mask))


def test_single_pixel_and_tolerance():
    mask = np.zeros((5, 5), bool)
    mask[2, 3] = True
    (edge,) = outer_rings(mask, 0, "edge")
    assert len(edge) >= 3 and np.array_equal(_coco_raster([edge], 5, 5), mask)
    (centre,) = outer_rings(mask, 0, "centre")
    assert len(centre) >= 3 and np.allclose(centre, [3, 2])
    disc = scene_masks()[2]
    coarse = outer_rings(disc, 1.0, "edge")[0]
    assert len(coarse) < len(outer_rings(disc, 0, "edge")[0])
    assert iou(_coco_raster([coarse], H, W), disc) >= 0.98
    with pytest.raises(ValueError):
        mask_to_polygons(disc, tolerance=-1)
