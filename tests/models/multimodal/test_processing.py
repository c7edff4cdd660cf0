from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.errors import ImageReadError
from ovseg.models.multimodal.processing import clip_center_crop, sam_input
from ovseg.models.multimodal.vision import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from tests.models.decoders.sam_tiny import tiny_sam

# one uint8 level after normalisation (1 / 255 / smallest std): PIL and transformers may round
# a resized pixel to neighbouring levels
ONE_LEVEL = 1.0 / 255.0 / min(OPENAI_CLIP_STD)


@pytest.mark.parametrize("shape", [(45, 70), (70, 45), (32, 32), (9, 200)])
def test_clip_crop_matches_transformers_processor(shape):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    image = (np.random.default_rng(0).random((*shape, 3)) * 255).astype(np.uint8)
    expected = torch.as_tensor(
        np.asarray(processor(images=image, return_tensors="pt")["pixel_values"][0])
    )
    ours = clip_center_crop(image, 32, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    assert ours.shape == (3, 32, 32)
    assert float((ours - expected).abs().max()) <= ONE_LEVEL + 1e-4


def test_sam_input_resizes_long_side_and_pads():
    sam = tiny_sam()
    image = np.full((20, 50, 3), 200, dtype=np.uint8)
    pixels, input_size = sam_input(image, sam)
    assert pixels.shape == (3, 64, 64) and input_size == (26, 64)
    assert torch.all(pixels[:, 26:] == 0)  # zero padding below the resized image
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1)
    torch.testing.assert_close(pixels[:, 5, :64], ((200 - mean) / std).expand(3, 64))


def test_bad_images_are_refused():
    with pytest.raises(ImageReadError):
        clip_center_crop(np.zeros((10, 10), dtype=np.uint8), 32, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    with pytest.raises(ImageReadError):
        sam_input(np.zeros((10, 10, 3), dtype=np.float32), tiny_sam())
