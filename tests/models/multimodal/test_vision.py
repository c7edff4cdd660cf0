from __future__ import annotations

import pytest
import torch

from ovseg.errors import ConfigError
from ovseg.models.multimodal.vision import (
    OpenClipVisionTower,
    VisionTower,
    selected_block_count,
)
from tests.models.multimodal.read_tiny import tiny_tower


def test_select_layer_counts_blocks():
    assert selected_block_count(24, -2) == 23
    assert selected_block_count(24, -1) == 24 and selected_block_count(24, 0) == 0
    with pytest.raises(ConfigError):
        selected_block_count(2, -4)


def test_hf_tower_is_llavas_penultimate_patch_features():
    torch.manual_seed(0)
    tower = tiny_tower()
    assert isinstance(tower, VisionTower) and tower.grid_size == (4, 4)
    images = torch.randn(2, 3, 32, 32)
    out = tower(images)
    reference = tower.vision_tower(pixel_values=images, output_hidden_states=True)
    torch.testing.assert_close(out, reference.hidden_states[-2][:, 1:])
    assert out.shape == (2, 16, 32)


def test_open_clip_tower_stops_before_the_last_block(tiny_model_names):
    import open_clip

    model = open_clip.create_model(tiny_model_names["vit"])
    visual = model.visual.eval()
    tower = OpenClipVisionTower(visual, (0.5,) * 3, (0.25,) * 3)
    assert isinstance(tower, VisionTower)
    assert tower.grid_size == (4, 4) and tower.hidden_size == 64
    captured = {}
    visual.transformer.resblocks[-2].register_forward_hook(
        lambda module, args, output: captured.setdefault("x", output)
    )
    images = torch.randn(1, 3, 32, 32)
    out = tower(images)
    with torch.no_grad():
        visual(images)
    torch.testing.assert_close(out, captured["x"][:, 1:])
    with_cls = OpenClipVisionTower(visual, (0.5,) * 3, (0.25,) * 3, select_feature="cls_patch")
    assert with_cls(images).shape == (1, 17, 64)
