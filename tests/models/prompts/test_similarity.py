"""Query-to-patch similarity and grid placement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError, PromptError
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.models.prompts import (
    GridPlacement,
    encode_phrase,
    min_max_normalize,
    query_similarity,
    tokens_to_grid,
)


def test_cosine_and_dot():
    tokens = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0))
    query = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    dot = query_similarity(query, tokens, metric="dot")
    # 5-term float32 sums in another order: error ~1e-7 of the terms' size (|x| <~ 10 here), so an
    # absolute floor covers sums that cancel to near 0, where a relative bound alone cannot hold
    np.testing.assert_allclose(dot, torch.einsum("dhw,d->hw", tokens, query), rtol=1e-6, atol=1e-5)
    cosine = query_similarity(query, tokens)
    expected = (tokens * query[:, None, None]).sum(0) / tokens.norm(dim=0) / query.norm()
    np.testing.assert_allclose(cosine, expected, rtol=1e-5, atol=1e-6)  # cosines are O(1)


def test_token_sequence_is_row_major():
    grid = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 3)  # (D, h, w)
    sequence = grid.reshape(2, 6).t()  # (h*w, D)
    np.testing.assert_array_equal(tokens_to_grid(sequence, (2, 3)), grid)
    square = torch.randn(16, 7)
    assert tokens_to_grid(square).shape == (7, 4, 4)
    with pytest.raises(ConfigError, match="grid_size"):
        tokens_to_grid(torch.randn(6, 7))
    with pytest.raises(ConfigError, match="dimensions"):
        query_similarity(torch.ones(3), square)


def test_min_max():
    np.testing.assert_allclose(min_max_normalize(torch.tensor([2.0, 4.0, 3.0])), [0, 1, 0.5])
    np.testing.assert_array_equal(min_max_normalize(torch.full((2, 2), 5.0)), np.zeros((2, 2)))


def test_to_image_whole_and_crop():
    grid = torch.rand(3, 3)
    whole = GridPlacement.whole(6, 9).to_image(grid)
    expected = F.interpolate(grid[None, None], (6, 9), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(whole, expected[0, 0])
    crop = GridPlacement.center_crop(6, 10).to_image(grid)  # covers x in [2, 8)
    inside = F.interpolate(grid[None, None], (6, 6), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(crop[:, 2:8], inside[0, 0])
    assert float(crop[:, :2].abs().sum()) == 0 and float(crop[:, 8:].abs().sum()) == 0


def test_placement_checks_and_cells():
    with pytest.raises(ConfigError):
        GridPlacement((4, 4), (0, 0, 5, 4))
    with pytest.raises(ConfigError):
        GridPlacement.create((4, 4), "corner")
    placement = GridPlacement.create((4, 8), (2, 0, 6, 4))
    xs, ys = placement.cell_centers(2, 4)
    np.testing.assert_allclose(xs, [2.5, 3.5, 4.5, 5.5])
    np.testing.assert_allclose(ys, [1, 3])
    assert placement.padding_cells(2, 4) == (0, 0, 2, 2)
    assert GridPlacement.create((4, 8), "whole").padding_cells(2, 4) == (0, 0, 0, 0)


def test_encode_phrase_templates(tiny_model_names, one_torch_thread):
    torch.manual_seed(0)
    backbone = ClipBackbone(tiny_model_names["vit"], templates="photo")
    phrase = "the dog on the left"
    np.testing.assert_allclose(
        encode_phrase(backbone, phrase), backbone.encode_text([phrase])[0], rtol=1e-6
    )
    # templates of the phrase's own: here the phrase as it is
    raw = backbone.model.encode_text(backbone.tokenizer([phrase]))[0]
    np.testing.assert_allclose(
        encode_phrase(backbone, phrase, "none"), F.normalize(raw, dim=0), rtol=1e-5, atol=1e-6
    )
    two = encode_phrase(backbone, phrase, ["a photo of {}.", "{}"])
    parts = F.normalize(
        backbone.model.encode_text(backbone.tokenizer([f"a photo of {phrase}.", phrase])), dim=1
    )
    np.testing.assert_allclose(two, F.normalize(parts.mean(0), dim=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(PromptError):
        encode_phrase(backbone, "   ")
