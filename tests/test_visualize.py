"""Heat maps, masks, points and instance drawings."""

from __future__ import annotations

import numpy as np

from ovseg.structures import Instances, PointPrompts, ReferringResult
from ovseg.visualize import (
    POINT_COLOURS,
    blend_heat_map,
    draw_instances,
    draw_mask,
    draw_points,
    heat_map,
    overlay,
    palette,
    referring_overlay,
)


def test_heat_map_colours_by_hand():
    # jet: r = 1.5 - |4v - 3|, g = 1.5 - |4v - 2|, b = 1.5 - |4v - 1|, clipped to [0, 1]
    colours = heat_map(np.array([[0.0, 0.5, 1.0]]))
    np.testing.assert_array_equal(colours[0], [[0, 0, 128], [128, 255, 128], [128, 0, 0]])
    blended = blend_heat_map(np.zeros((1, 3, 3), np.uint8), np.array([[0.0, 0.5, 1.0]]), 0.5)
    np.testing.assert_array_equal(blended[0, 0], [0, 0, 64])


def test_draw_mask_by_hand():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[True, False], [False, False]])
    out = draw_mask(image, mask, (200, 0, 50), 0.5)
    np.testing.assert_array_equal(out[0, 0], [150, 50, 75])
    np.testing.assert_array_equal(out[1, 1], [100, 100, 100])


def test_points_in_their_colours():
    image = np.zeros((40, 40, 3), np.uint8)
    points = PointPrompts([[5.5, 5.5], [20.5, 20.5], [34.5, 10.5]], [1, 0, -1])
    out = draw_points(image, points, radius=3)
    np.testing.assert_array_equal(out[5, 5], POINT_COLOURS[1])
    np.testing.assert_array_equal(out[20, 20], POINT_COLOURS[0])
    np.testing.assert_array_equal(out[10, 34], POINT_COLOURS[-1])
    assert out[30, 5].sum() == 0


def test_instances_drawn_best_on_top():
    image = np.zeros((40, 60, 3), np.uint8)
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 20:30, 10:40] = True
    masks[1, 25:35, 30:50] = True
    instances = Instances(
        masks=masks,
        boxes=[[10, 20, 40, 30], [30, 25, 50, 35]],
        scores=[0.9, 0.4],
        labels=[0, 1],
        class_names=["cat", "dog"],
    )
    out = draw_instances(image, instances, boxes=False, labels=False)
    colours = palette(2).astype(np.float32)
    np.testing.assert_array_equal(out[27, 35], (0.5 * colours[0]).round())  # overlap: best
    np.testing.assert_array_equal(out[33, 45], (0.5 * colours[1]).round())
    framed = draw_instances(image, instances)
    np.testing.assert_array_equal(framed[29, 39], palette(2)[0])  # box's last pixel
    assert framed.shape == image.shape
    assert (framed[:20] != 0).any()  # a caption above the first box


def test_referring_overlay_and_legend_overlay():
    image = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:10] = True
    result = ReferringResult(
        mask=mask,
        score=0.8,
        phrase="the cat",
        similarity=np.linspace(0, 1, 600, dtype=np.float32).reshape(20, 30),
        points=PointPrompts([[7.5, 7.5]], [1]),
    )
    panel = referring_overlay(image, result)
    assert panel.shape == (36, 64, 3)
    labels = np.zeros((4, 4), np.int64)
    assert overlay(np.zeros((4, 4, 3), np.uint8), labels, ["a"]).shape[0] >= 4
