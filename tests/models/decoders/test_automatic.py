"""Automatic mask proposals equal SamAutomaticMaskGenerator's on the same tiny weights."""

from __future__ import annotations

import sys
import types
from collections import deque

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything import automatic_mask_generator as sam_amg_module
from segment_anything.utils import amg

from ovseg.errors import ConfigError
from ovseg.models.decoders import automatic
from ovseg.models.decoders.automatic import (
    AutomaticMaskSettings,
    crop_boxes,
    mask_boxes_inclusive,
    near_crop_edge,
    point_grid,
    remove_small_regions,
    stability_scores,
)
from ovseg.models.decoders.sam import SamDecoder
from tests.models.decoders.sam_tiny import random_image, tiny_sam

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# thresholds where the tiny random model keeps some masks and drops others at every stage
SETTINGS = {
    "points_per_side": 6,
    "points_per_batch": 10,  # 36 points: 4 batches, the last one partial
    "pred_iou_thresh": 0.45,
    "stability_score_thresh": 0.5,
    "stability_score_offset": 1.0,
    # the random model's masks are scattered, so nearly all boxes cover the image: a high
    # NMS threshold keeps a few of them (0.7 would keep one)
    "box_nms_thresh": 0.98,
}


def _label_8_connected(image: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """cv2.connectedComponentsWithStats(image, 8) re-derived: breadth-first search in raster
    order; label 0 is the zero pixels; stats' last column is the area."""
    height, width = image.shape
    labels = np.zeros((height, width), dtype=np.int32)
    areas = [int((image == 0).sum())]
    for y in range(height):
        for x in range(width):
            if image[y, x] == 0 or labels[y, x]:
                continue
            label = len(areas)
            labels[y, x] = label
            queue, area = deque([(y, x)]), 0
            while queue:
                cy, cx = queue.popleft()
                area += 1
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < height and 0 <= nx < width:
                            if image[ny, nx] and not labels[ny, nx]:
                                labels[ny, nx] = label
                                queue.append((ny, nx))
            areas.append(area)
    stats = np.zeros((len(areas), 5), dtype=np.int32)
    stats[:, -1] = areas
    return len(areas), labels, stats, np.zeros((len(areas), 2))


@pytest.fixture
def fake_cv2(monkeypatch):
    """SAM's reference clean-up imports cv2 (not a dependency here): give it the BFS above."""
    module = types.ModuleType("cv2")

    def connected_components_with_stats(image, connectivity):
        assert connectivity == 8
        return _label_8_connected(np.asarray(image))

    module.connectedComponentsWithStats = connected_components_with_stats
    monkeypatch.setitem(sys.modules, "cv2", module)


def _reference(sam, image, **settings):
    records = SamAutomaticMaskGenerator(sam, **settings).generate(image)
    return {
        "masks": np.stack([r["segmentation"] for r in records]) if records else np.zeros((0,)),
        "iou": np.array([r["predicted_iou"] for r in records]),
        "stability": np.array([r["stability_score"] for r in records]),
        "bbox_xywh": np.array([r["bbox"] for r in records]),
        "points": np.array([r["point_coords"][0] for r in records]),
        "crop_xywh": np.array([r["crop_box"] for r in records]),
    }


def _assert_same(ours, ref):
    assert len(ours) == len(ref["iou"]) > 0
    assert ours.masks.dtype == torch.bool
    # Exact masks by design: the same model decodes the same points in the same batches
    # (points_per_batch) through the same ops as segment_anything, so the logits, thresholds and
    # filters see identical bits. Scores are in [0, 1]: 1e-6 is a few float32 ulps.
    np.testing.assert_array_equal(ours.masks.numpy(), ref["masks"])
    np.testing.assert_allclose(ours.iou_scores.numpy(), ref["iou"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.stability_scores.numpy(), ref["stability"], atol=1e-6)
    x, y, w, h = ref["bbox_xywh"].T
    # SAM's boxes end on the last mask pixel; ours on the pixel edge after it
    np.testing.assert_array_equal(ours.boxes.numpy(), np.stack([x, y, x + w + 1, y + h + 1], 1))
    # pixel coordinates up to the image size: float32 vs float64 grids differ by <= 1/2 ulp
    np.testing.assert_allclose(ours.point_coords.numpy(), ref["points"], rtol=1e-6, atol=1e-6)
    x, y, w, h = ref["crop_xywh"].T
    np.testing.assert_array_equal(ours.crop_boxes.numpy(), np.stack([x, y, x + w, y + h], 1))


def test_same_masks_scores_and_order_as_segment_anything():
    sam, image = tiny_sam(), random_image()
    ref = _reference(sam, image, **SETTINGS)
    total = 6 * 6 * 3
    assert 1 < len(ref["iou"]) < total  # the thresholds keep some and drop others
    ours = SamDecoder.from_model(sam).generate(image, **SETTINGS)
    _assert_same(ours, ref)
    assert ours.masks.shape[1:] == image.shape[:2]


def test_crop_layers_match(monkeypatch):
    # The random model's masks fill their crop, so SAM's 20 px crop-edge filter would drop every
    # crop mask; switch it off on both sides (it is compared on its own below).
    monkeypatch.setattr(automatic, "CROP_EDGE_TOLERANCE", -1.0)
    monkeypatch.setattr(
        sam_amg_module,
        "is_box_near_crop_edge",
        lambda boxes, crop, image: torch.zeros(len(boxes), dtype=torch.bool),
    )
    sam, image = tiny_sam(), random_image(56, 64, seed=3)
    settings = {
        **SETTINGS,
        "crop_n_layers": 1,
        "crop_n_points_downscale_factor": 2,
        "crop_overlap_ratio": 0.3,
        "crop_nms_thresh": 0.5,
    }
    ref = _reference(sam, image, **settings)
    assert len({tuple(c) for c in ref["crop_xywh"]}) > 2  # masks from the image and crops
    decoder = SamDecoder.from_model(sam)
    decoder.set_image(image)
    before = decoder.features.clone()
    _assert_same(decoder.generate(**settings), ref)
    assert torch.equal(decoder.features, before)  # crops did not replace the image state


def test_crop_edge_filter_matches_segment_anything():
    generator = torch.Generator().manual_seed(0)
    crop, image = [20, 10, 60, 50], [0, 0, 60, 70]
    boxes = torch.randint(0, 45, (200, 4), generator=generator)  # crop frame
    offset = torch.tensor([20, 10, 20, 10])
    expected = amg.is_box_near_crop_edge(boxes, crop, image)
    ours = near_crop_edge(boxes + offset, tuple(crop), tuple(image))
    assert torch.equal(ours, expected) and 0 < int(ours.sum()) < 200


def test_small_region_clean_up_matches(fake_cv2):
    sam, image = tiny_sam(), random_image()
    settings = {**SETTINGS, "min_mask_region_area": 40, "pred_iou_thresh": 0.3}
    ref = _reference(sam, image, **settings)
    plain = SamDecoder.from_model(sam).generate(image, **{**settings, "min_mask_region_area": 0})
    ours = SamDecoder.from_model(sam).generate(image, **settings)
    _assert_same(ours, ref)
    assert not torch.equal(ours.masks, plain.masks[: len(ours)])  # the clean-up changed masks


def test_defaults_are_segment_anythings():
    defaults = AutomaticMaskSettings()
    generator = SamAutomaticMaskGenerator(tiny_sam())
    for name in (
        "points_per_batch",
        "pred_iou_thresh",
        "stability_score_thresh",
        "stability_score_offset",
        "box_nms_thresh",
        "crop_n_layers",
        "crop_nms_thresh",
        "crop_overlap_ratio",
        "crop_n_points_downscale_factor",
        "min_mask_region_area",
    ):
        assert getattr(defaults, name) == getattr(generator, name), name
    assert defaults.points_per_side == 32
    np.testing.assert_array_equal(point_grid(32), generator.point_grids[0])
    with pytest.raises(ConfigError, match="points_per_sid"):
        AutomaticMaskSettings.create(points_per_sid=4)
    with pytest.raises(ConfigError, match="at least 1"):
        AutomaticMaskSettings.create(points_per_batch=0)


def test_geometry_helpers_match_segment_anything():
    for n in (1, 5, 16):
        np.testing.assert_array_equal(point_grid(n), amg.build_point_grid(n))
    for size, layers, ratio in (((40, 48), 1, 512 / 1500), ((100, 73), 2, 0.25)):
        boxes, layer_ids = amg.generate_crop_boxes(size, layers, ratio)
        ours = crop_boxes(size[0], size[1], layers, ratio)
        assert [list(b) for b, _ in ours] == boxes
        assert [layer for _, layer in ours] == layer_ids

    generator = torch.Generator().manual_seed(0)
    masks = torch.rand((6, 9, 11), generator=generator) > 0.8
    masks[0] = False
    masks[1] = False
    masks[1, 4, 7] = True
    expected = amg.batched_mask_to_box(masks)
    assert torch.equal(mask_boxes_inclusive(masks), expected)
    assert mask_boxes_inclusive(masks[:0]).shape == (0, 4)

    logits = torch.randn((5, 9, 11), generator=generator) * 3
    logits[0] = -5  # empty at both cut-offs: 0 / 0
    expected = amg.calculate_stability_score(logits, 0.0, 1.0)
    torch.testing.assert_close(stability_scores(logits, 0.0, 1.0), expected, equal_nan=True)
    assert torch.isnan(stability_scores(logits, 0.0, 1.0)[0])


def _reference_small_regions(mask, area, mode):
    """SAM's rule, with the BFS labelling above."""
    fill_holes = mode == "holes"
    count, labels, stats, _ = _label_8_connected((fill_holes ^ mask).astype(np.uint8))
    sizes = stats[1:, -1]
    small = [i + 1 for i, s in enumerate(sizes) if s < area]
    if not small:
        return mask, False
    fill = [0, *small]
    if not fill_holes:
        fill = [i for i in range(count) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(labels, fill), True


def test_remove_small_regions_holes_and_islands():
    mask = np.zeros((12, 12), dtype=bool)
    mask[1:8, 1:8] = True
    mask[3, 3] = False  # a one-pixel hole
    mask[10, 10] = True  # a one-pixel island
    mask[9, 9] = True  # diagonal neighbour: 8-connected to the island
    filled, changed = remove_small_regions(mask, 5, "holes")
    assert changed and filled[3, 3] and filled[10, 10]
    cleaned, changed = remove_small_regions(filled, 5, "islands")
    assert changed and not cleaned[10, 10] and not cleaned[9, 9] and cleaned[1:8, 1:8].all()
    same, changed = remove_small_regions(cleaned, 5, "islands")
    assert not changed and same is cleaned
    tiny = np.zeros((6, 6), dtype=bool)
    tiny[0, 0] = tiny[4, 4] = tiny[4, 5] = True  # every island small: the largest stays
    kept, changed = remove_small_regions(tiny, 10, "islands")
    assert changed and kept.sum() == 2 and kept[4, 4] and kept[4, 5]

    rng = np.random.default_rng(0)
    for _ in range(20):
        random_mask = rng.random((10, 13)) > rng.uniform(0.3, 0.7)
        for mode in ("holes", "islands"):
            area = int(rng.integers(1, 12))
            ours, ours_changed = remove_small_regions(random_mask, area, mode)
            ref, ref_changed = _reference_small_regions(random_mask, area, mode)
            assert ours_changed == ref_changed
            np.testing.assert_array_equal(ours, ref)


def test_no_surviving_mask_gives_empty_proposals():
    decoder = SamDecoder.from_model(tiny_sam())
    image = random_image()
    for extra in ({}, {"min_mask_region_area": 10}):
        empty = decoder.generate(image, **{**SETTINGS, "pred_iou_thresh": 50.0, **extra})
        assert len(empty) == 0
        assert empty.masks.shape == (0, 40, 48) and empty.masks.dtype == torch.bool
        assert empty.boxes.shape == (0, 4) and empty.point_coords.shape == (0, 2)
        assert empty.iou_scores.shape == empty.stability_scores.shape == (0,)
