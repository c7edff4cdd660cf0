from __future__ import annotations

import pytest
import torch
from torch import nn

from ovseg.errors import ConfigError
from ovseg.models.multimodal.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from ovseg.models.multimodal.llava import build_projector, expanded_position, splice_image_tokens


def test_projector_layouts():
    assert isinstance(build_projector("linear", 8, 16), nn.Linear)
    mlp = build_projector("mlp2x_gelu", 8, 16)
    assert sorted(mlp.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert isinstance(mlp[1], nn.GELU) and mlp[2].in_features == 16
    assert len(build_projector("mlp3x_gelu", 8, 16)) == 5
    with pytest.raises(ConfigError):
        build_projector("conv", 8, 16)


def test_splice_places_image_tokens_labels_and_mask():
    embed = nn.Embedding(10, 4)
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 6, 7], [1, 8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, 6, 7], [-100, 8, 9, -100, -100]])
    feats = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    out = splice_image_tokens(embed, ids, feats, mask, labels)
    assert out.inputs_embeds.shape == (2, 7, 4) and out.image_starts == [2, -1]
    torch.testing.assert_close(out.inputs_embeds[0, 2:5], feats[0])
    torch.testing.assert_close(out.inputs_embeds[0, 5], embed.weight[6])
    torch.testing.assert_close(out.inputs_embeds[1, :5], embed(ids[1]))  # text-only row
    torch.testing.assert_close(out.inputs_embeds[1, 5:], torch.zeros(2, 4))  # right padding
    assert out.attention_mask.tolist() == [[1] * 7, [1, 1, 1, 0, 0, 0, 0]]
    assert out.labels[0].tolist() == [-100] * 5 + [6, 7]
    assert out.labels[1].tolist() == [-100, 8, 9, -100, -100, -100, -100]
    assert IGNORE_INDEX == -100
    assert expanded_position(3, 2, 3) == 5 and expanded_position(1, 2, 3) == 1
    assert expanded_position(4, -1, 3) == 4


def test_one_image_per_row():
    embed = nn.Embedding(10, 4)
    ids = torch.tensor([[IMAGE_TOKEN_INDEX, 2, IMAGE_TOKEN_INDEX]])
    with pytest.raises(ConfigError, match="placeholders"):
        splice_image_tokens(embed, ids, torch.zeros(1, 3, 4))
    with pytest.raises(ConfigError, match="one image per row"):
        splice_image_tokens(embed, ids[:, :2], torch.zeros(2, 3, 4))
