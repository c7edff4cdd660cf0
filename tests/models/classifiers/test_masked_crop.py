"""Masked square crops through CLIP's image encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.models.classifiers import (
    MaskContext,
    MaskedCropClassifier,
    crop_masks,
    embed_box_crops,
)
from ovseg.registry import MASK_CLASSIFIERS

FILL = (0.25, 0.5, 0.75)


@pytest.fixture
def image():
    return np.arange(6 * 6 * 3, dtype=np.uint8).reshape(6, 6, 3) * 2


def test_registered():
    assert MASK_CLASSIFIERS.get("MaskedCropClassifier") is MaskedCropClassifier


def test_tight_square_crop_by_hand(image):
    mask = np.zeros((1, 6, 6), dtype=bool)
    mask[0, 1:3, 1:5] = True  # box (1, 1, 5, 3): side 4, centre (3, 2) -> rows 0..3, cols 1..4
    crop = crop_masks(image, mask, 4, FILL)[0]
    pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    fill = torch.tensor(FILL).view(3, 1)
    np.testing.assert_allclose(crop[:, 1:3, :], pixels[:, 1:3, 1:5])
    np.testing.assert_allclose(crop[:, 0, :], fill.expand(3, 4))  # outside the mask
    np.testing.assert_allclose(crop[:, 3, :], fill.expand(3, 4))
    unmasked = crop_masks(image, mask, 4, FILL, mask_background=False)[0]
    np.testing.assert_allclose(unmasked, pixels[:, 0:4, 1:5])


def test_context_beyond_the_border_is_filled(image):
    mask = np.zeros((1, 6, 6), dtype=bool)
    mask[0, 0, 0] = True  # box (0, 0, 1, 1); x3 context: side 3 from (-1, -1)
    crop = crop_masks(image, mask, 3, FILL, context_scale=3.0, mask_background=False)[0]
    pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    np.testing.assert_allclose(crop[:, 1:, 1:], pixels[:, :2, :2])
    np.testing.assert_allclose(crop[:, 0, :], torch.tensor(FILL).view(3, 1).expand(3, 3))
    np.testing.assert_allclose(crop[:, :, 0], torch.tensor(FILL).view(3, 1).expand(3, 3))


def test_resized_to_the_encoder_size(image):
    mask = np.ones((2, 6, 6), dtype=bool)
    crops = crop_masks(image, mask, 12, FILL)
    assert crops.shape == (2, 3, 12, 12)
    assert crops.min() >= 0 and crops.max() <= 1


def test_embed_with_tiny_clip(tiny_model_names, one_torch_thread, image):
    torch.manual_seed(0)
    backbone = ClipBackbone(tiny_model_names["vit"], templates="photo")
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[0, :3, :3] = True
    masks[1, 2:, 1:] = True
    classifier = MaskedCropClassifier(batch_size=1)
    out = classifier.embed(masks, MaskContext(image=image, tokens=None, backbone=backbone))
    crops = crop_masks(image, masks, backbone.image_size, backbone.mean.flatten().tolist())
    expected = F.normalize(backbone.encode_image(backbone.normalize(crops)), dim=1)
    assert out.shape == (2, backbone.embed_dim)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # boxes: the crops of the filled boxes, the same as the masks with those extents
    unmasked = MaskedCropClassifier(batch_size=1, mask_background=False)
    boxes = np.array([[0.0, 0.0, 3.0, 3.0], [1.0, 2.0, 6.0, 6.0]], dtype=np.float32)
    filled = np.zeros((2, 6, 6), dtype=bool)
    filled[0, :3, :3] = True
    filled[1, 2:, 1:] = True
    np.testing.assert_array_equal(
        embed_box_crops(unmasked, image, boxes, backbone),
        unmasked.embed(filled, MaskContext(image=image, tokens=None, backbone=backbone)),
    )


def test_bad_settings():
    with pytest.raises(ConfigError):
        MaskedCropClassifier(context_scale=0)
