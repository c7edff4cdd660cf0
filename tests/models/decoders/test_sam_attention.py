"""The fused (sdpa) SAM image-encoder attention against segment-anything's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

from ovseg.errors import ConfigError
from ovseg.models.decoders.sam import SamDecoder
from ovseg.models.decoders.sam_attention import SdpaRelPosAttention, with_sdpa_attention
from tests.models.decoders.sam_tiny import TINY_WINDOWED_SAM, random_image, tiny_sam
from tests.tolerance import assert_close_to_scale


def _randomise_rel_pos_(model: torch.nn.Module, seed: int = 0) -> None:
    """segment-anything zero-initialises the relative positions; give them values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "rel_pos" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))


@pytest.mark.parametrize("size", [8, 5])  # 5: the relative positions are resized (2 * 5 - 1)
def test_the_fused_attention_computes_segment_anythings_attention(size):
    torch.manual_seed(0)
    attention = Attention(32, num_heads=4, use_rel_pos=True, input_size=(8, 8)).eval()
    _randomise_rel_pos_(attention)
    x = torch.randn(2, size, size, 32)
    with torch.no_grad():
        expected = attention(x)
        fused = SdpaRelPosAttention(attention)(x)
    assert fused.shape == expected.shape == (2, size, size, 32)
    assert_close_to_scale(fused, expected, rtol=1e-5)


def test_sdpa_embeddings_match_native_and_leave_the_model_unchanged():
    sam = tiny_sam(config=TINY_WINDOWED_SAM)
    _randomise_rel_pos_(sam)
    state = {key: value.clone() for key, value in sam.state_dict().items()}
    native = SamDecoder.from_model(sam)
    fused = SamDecoder.from_model(sam, attention="sdpa")
    # the wrapped model keeps segment-anything's modules (a reference built on it is unchanged)
    assert all(isinstance(block.attn, Attention) for block in sam.image_encoder.blocks)
    assert sam.state_dict().keys() == state.keys()
    images = [random_image(40, 48, seed=1), random_image(64, 32, seed=2)]
    for ours, theirs in zip(fused.embed_batch(images), native.embed_batch(images), strict=True):
        assert_close_to_scale(ours.features, theirs.features, rtol=1e-5)
    # the copy shares the parameters: changing the model changes both
    with torch.no_grad():
        sam.image_encoder.blocks[0].attn.proj.weight.mul_(2.0)
    assert_close_to_scale(
        fused.embed(images[0]).features, native.embed(images[0]).features, rtol=1e-5
    )
    masks_native = native.generate(images[0], points_per_side=4, pred_iou_thresh=0.0,
                                   stability_score_thresh=0.0).masks  # fmt: skip
    masks_fused = fused.generate(images[0], points_per_side=4, pred_iou_thresh=0.0,
                                 stability_score_thresh=0.0).masks  # fmt: skip
    assert masks_native.shape == masks_fused.shape
    differing = (np.asarray(masks_native) != np.asarray(masks_fused)).mean()
    assert differing < 1e-3


def test_unknown_attention_and_non_sam_encoders_are_refused():
    with pytest.raises(ConfigError, match="attention must be one of"):
        SamDecoder.from_model(tiny_sam(), attention="flash")
    with pytest.raises(ValueError, match="segment-anything ViT blocks"):
        with_sdpa_attention(torch.nn.Linear(2, 2))
