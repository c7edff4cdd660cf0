"""Sam2Decoder.generate equals sam2's SAM2AutomaticMaskGenerator: same masks, same order.

The generator runs the predictor on the same batches of grid points as ours, through the same
modules, so scores are compared exactly; only the point coordinates (float32 in both) are
compared to 1e-5 px because sam2 returns them through numpy float32 -> Python floats.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2 import automatic_mask_generator as sam2_amg_module
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

from ovseg.errors import ConfigError
from ovseg.models.decoders import Sam2Decoder, Sam2MaskSettings, automatic
from tests.models.decoders.sam2_tiny import reference_connected_components, tiny_sam2
from tests.models.decoders.sam_tiny import random_image

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

# Thresholds where the tiny random model keeps some masks and drops others. Its masks are
# scattered noise, so nearly every box covers the image and box NMS below 1.0 keeps one or two
# masks: 1.0 keeps them all, sorted by predicted IoU (suppression is compared on its own).
SETTINGS = {
    "points_per_side": 6,
    "points_per_batch": 10,  # 36 points: 4 batches, the last one partial
    "pred_iou_thresh": 0.5,
    "stability_score_thresh": 0.8,
    "box_nms_thresh": 1.0,
}


@pytest.fixture(scope="module")
def model():
    return tiny_sam2(seed=4)


def _reference(model, image, **settings):
    generator = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **settings)
    size = model.image_size  # the predictor hard-codes a 1024 px input's feature sizes
    generator.predictor._bb_feat_sizes = [(size // 4,) * 2, (size // 8,) * 2, (size // 16,) * 2]
    records = generator.generate(image)
    return {
        "masks": np.stack([r["segmentation"] for r in records]) if records else np.zeros((0,)),
        "iou": np.array([r["predicted_iou"] for r in records], dtype=np.float32),
        "stability": np.array([r["stability_score"] for r in records], dtype=np.float32),
        "bbox_xywh": np.array([r["bbox"] for r in records]),
        "points": np.array([r["point_coords"][0] for r in records]),
        "crop_xywh": np.array([r["crop_box"] for r in records]),
    }


def _assert_same(ours, ref):
    assert len(ours) == len(ref["iou"]) > 0
    np.testing.assert_array_equal(ours.masks.numpy(), ref["masks"])
    np.testing.assert_array_equal(ours.iou_scores.numpy(), ref["iou"])
    np.testing.assert_array_equal(ours.stability_scores.numpy(), ref["stability"])
    x, y, w, h = ref["bbox_xywh"].T
    # sam2's boxes end on the last mask pixel; ours on the pixel edge after it (zeros for an
    # empty mask, which sam2 gives the box [0, 0, 0, 0] as well)
    non_empty = ref["masks"].reshape(len(x), -1).any(axis=1)[:, None]
    expected = np.stack([x, y, x + w + 1, y + h + 1], 1) * non_empty
    np.testing.assert_array_equal(ours.boxes.numpy(), expected)
    np.testing.assert_allclose(ours.point_coords.numpy(), ref["points"], rtol=0, atol=1e-5)
    x, y, w, h = ref["crop_xywh"].T
    np.testing.assert_array_equal(ours.crop_boxes.numpy(), np.stack([x, y, x + w, y + h], 1))


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"multimask_output": False, "pred_iou_thresh": 0.3},
        {"use_m2m": True, "pred_iou_thresh": 0.4},
        {"mask_threshold": 0.5},
        {"box_nms_thresh": 0.98},
        {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},  # 0 switches a filter off
    ],
    ids=["default", "single-mask", "m2m", "threshold", "nms", "no-filters"],
)
def test_same_masks_scores_and_order_as_sam2(model, extra):
    image = random_image(40, 48, seed=5)
    settings = {**SETTINGS, **extra}
    ref = _reference(model, image, **settings)
    _assert_same(Sam2Decoder.from_model(model).generate(image, **settings), ref)
    k = 1 if extra.get("multimask_output") is False else 3
    if "stability_score_thresh" in extra:
        assert len(ref["iou"]) == 36 * k
        assert not ref["masks"].reshape(36 * k, -1).any(axis=1).all()  # empty masks kept
    elif "box_nms_thresh" not in extra:
        assert 1 < len(ref["iou"]) < 36 * k  # the thresholds keep some and drop others


def test_m2m_changes_the_proposals(model):
    image = random_image(40, 48, seed=5)
    decoder = Sam2Decoder.from_model(model)
    plain = decoder.generate(image, **SETTINGS)
    refined = decoder.generate(**SETTINGS, use_m2m=True)
    assert len(plain) != len(refined) or not torch.equal(plain.masks, refined.masks)


def test_crop_layers_match(model, monkeypatch):
    # The random masks fill their crop, so the 20 px crop-edge filter would drop every crop
    # mask; it is switched off on both sides (test_automatic compares the filter itself).
    monkeypatch.setattr(automatic, "CROP_EDGE_TOLERANCE", -1.0)
    monkeypatch.setattr(
        sam2_amg_module,
        "is_box_near_crop_edge",
        lambda boxes, crop, image: torch.zeros(len(boxes), dtype=torch.bool),
    )
    image = random_image(56, 64, seed=3)
    settings = {
        **SETTINGS,
        "crop_n_layers": 1,
        "crop_n_points_downscale_factor": 2,
        "crop_overlap_ratio": 0.3,
        "crop_nms_thresh": 0.5,
    }
    ref = _reference(model, image, **settings)
    assert len({tuple(c) for c in ref["crop_xywh"]}) > 2  # masks from the image and crops
    decoder = Sam2Decoder.from_model(model)
    decoder.set_image(image)
    before = decoder.features.clone()
    _assert_same(decoder.generate(**settings), ref)
    assert torch.equal(decoder.features, before)  # crops did not replace the image state


def test_min_mask_region_area_cleans_low_res_logits_as_sam2(model, monkeypatch):
    """sam2 fills holes / drops sprinkles of the low-resolution logits in its CUDA extension
    (skipped with a warning without it); with the same labelling on the CPU it must agree, and
    no clean-up of the final masks follows (unlike SAM's generator)."""
    import sam2.utils.misc

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", reference_connected_components)
    image = random_image(40, 48, seed=5)
    settings = {**SETTINGS, "min_mask_region_area": 6}
    ref = _reference(model, image, **settings)
    ours = Sam2Decoder.from_model(model).generate(image, **settings)
    _assert_same(ours, ref)
    plain = Sam2Decoder.from_model(model).generate(image, **SETTINGS)
    assert len(plain) != len(ours) or not torch.equal(plain.masks, ours.masks)


def test_defaults_are_sam2s(model):
    defaults = Sam2MaskSettings()
    generator = SAM2AutomaticMaskGenerator(model)
    for name in (
        "points_per_batch",
        "pred_iou_thresh",
        "stability_score_thresh",
        "stability_score_offset",
        "mask_threshold",
        "box_nms_thresh",
        "crop_n_layers",
        "crop_nms_thresh",
        "crop_overlap_ratio",
        "crop_n_points_downscale_factor",
        "min_mask_region_area",
        "use_m2m",
        "multimask_output",
    ):
        assert getattr(defaults, name) == getattr(generator, name), name
    assert defaults.points_per_side == 32 and defaults.pred_iou_thresh == 0.8
    np.testing.assert_array_equal(automatic.point_grid(32), generator.point_grids[0])
    with pytest.raises(ConfigError, match="use_m2"):
        Sam2MaskSettings.create(use_m2=True)
