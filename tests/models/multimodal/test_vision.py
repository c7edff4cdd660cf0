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


def test_tiles_encode_each_crop_and_stitch_one_row_major_grid(tiny_model_names):
    import open_clip

    visual = open_clip.create_model(tiny_model_names["vit"]).visual.eval()
    single = OpenClipVisionTower(visual, (0.5,) * 3, (0.25,) * 3)
    tiled = OpenClipVisionTower(visual, (0.5,) * 3, (0.25,) * 3, tiles=2)
    assert tiled.image_size == 64 and tiled.grid_size == (8, 8) and tiled.num_patches == 64
    images = torch.randn(2, 3, 64, 64)
    out = tiled(images)
    assert out.shape == (2, 64, 64)
    grid = out.reshape(2, 8, 8, 64)
    for row in range(2):
        for col in range(2):
            crop = images[:, :, 32 * row : 32 * row + 32, 32 * col : 32 * col + 32]
            expected = single(crop).reshape(2, 4, 4, 64)
            got = grid[:, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4]
            torch.testing.assert_close(got, expected)
    with_cls = OpenClipVisionTower(
        visual, (0.5,) * 3, (0.25,) * 3, select_feature="cls_patch", tiles=2
    )(images)
    assert with_cls.shape == (2, 4 + 64, 64)
    torch.testing.assert_close(with_cls[:, 4:], out)


def test_hf_tower_tiles_match_crops():
    torch.manual_seed(0)
    single = tiny_tower()
    tiled = type(single)(single.vision_tower, tiles=3)
    assert tiled.image_size == 96 and tiled.grid_size == (12, 12)
    images = torch.randn(1, 3, 96, 96)
    grid = tiled(images).reshape(1, 12, 12, -1)
    corner = single(images[:, :, 64:, 32:64]).reshape(1, 4, 4, -1)
    torch.testing.assert_close(grid[:, 8:, 4:8], corner)


@pytest.mark.parametrize("tiles", [0, 1.5, -2])
def test_tiles_must_be_a_positive_whole_number(tiles, tiny_model_names):
    import open_clip

    visual = open_clip.create_model(tiny_model_names["vit"]).visual
    with pytest.raises(ConfigError, match="mm_vision_tiles"):
        OpenClipVisionTower(visual, (0.5,) * 3, (0.25,) * 3, tiles=tiles)
