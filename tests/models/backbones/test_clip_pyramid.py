"""ClipPyramid: four-level features plus joint-space embeddings from CLIP ResNets and ViTs."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ovseg.errors import ConfigError
from ovseg.models.backbones.clip_pyramid import (
    ClipPyramid,
    default_out_indices,
    drop_path,
    resize_grid_embedding,
)
from ovseg.models.backbones.dense_resnet import resnet_dense_tokens
from ovseg.models.backbones.dense_vit import vit_dense_tokens
from tests.conftest import TINY_TEXT, randomize_
from tests.tolerance import assert_close_to_scale

# The pyramid's embeddings vs open_clip / the shared dense helpers: the same float32 math in
# another order (batched positions, fused attention). Errors scale with the values' magnitude,
# near-zero entries included: measured <= 4e-7 of max|x| on MKL's AVX-512/AVX2/SSE paths.
TOKEN_RTOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(size, batch=2, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _model(name, seed=1):
    model = open_clip.create_model(name, pretrained=None)
    return randomize_(model, seed=seed).eval()


@pytest.fixture(scope="module")
def vit16_name(tmp_path_factory, tiny_model_names):
    folder = tmp_path_factory.mktemp("vit16")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 64,
            "layers": 2,
            "width": 32,
            "patch_size": 16,
            "head_width": 16,
        },
        "text_cfg": TINY_TEXT,
    }
    (folder / "ovseg-test-vit16.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return "ovseg-test-vit16"


def test_resnet_levels_global_and_dense(tiny_model_names):
    model = _model(tiny_model_names["rn"])
    pyramid = ClipPyramid(model.visual).eval()
    images = _images(64)
    with torch.no_grad():
        out = pyramid(images)
        expected_global = model.encode_image(images)
        ref_global, ref_dense = resnet_dense_tokens(model.visual, images)
    assert pyramid.out_channels == [32, 64, 128, 256] and pyramid.embed_dim == 32
    assert [tuple(f.shape[1:]) for f in out.features] == [
        (32, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2)
    ]  # fmt: skip
    assert_close_to_scale(out.global_embed, expected_global, TOKEN_RTOL)
    # at the native grid no positional interpolation happens: same as the shared helper
    assert_close_to_scale(out.dense, ref_dense, TOKEN_RTOL)
    assert_close_to_scale(out.global_embed, ref_global, TOKEN_RTOL)
    assert pyramid.dense_stride == 32 and pyramid.dense_level == 3
    with torch.no_grad():
        layer4 = model.visual.layer4(
            model.visual.layer3(model.visual.layer2(model.visual.layer1(model.visual.stem(images))))
        )
    torch.testing.assert_close(out.features[3], layer4)


def test_resnet_positional_embedding_is_resized_bilinearly(tiny_model_names):
    model = _model(tiny_model_names["rn"])
    original = model.visual.attnpool.positional_embedding.detach().clone()  # 2x2 grid + mean
    pyramid = ClipPyramid(model.visual, input_resolution=128).eval()
    stored = model.visual.attnpool.positional_embedding
    assert isinstance(stored, nn.Parameter) and stored.shape == (1 + 16, original.shape[1])
    grid = original[1:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(stored[1:], expected.permute(0, 2, 3, 1).reshape(16, -1))
    torch.testing.assert_close(stored[0], original[0])
    with torch.no_grad():
        out = pyramid(_images(128, batch=1))
    assert out.dense.shape == (1, 32, 4, 4)
    # another input size: the stored 4x4 grid is resized again at run time
    resized = resize_grid_embedding(stored.detach(), (3, 5))
    assert resized.shape == (16, stored.shape[1])
    torch.testing.assert_close(resized[0], stored[0].detach())
    with torch.no_grad():
        assert pyramid(torch.randn(1, 3, 96, 160)).dense.shape == (1, 32, 3, 5)


def test_vit_levels_tokens_and_global(tiny_model_names):
    model = _model(tiny_model_names["vit"])
    pyramid = ClipPyramid(model.visual).eval()
    images = _images(32)
    with torch.no_grad():
        out = pyramid(images)
        ref_global, ref_dense = vit_dense_tokens(model.visual, images, "vanilla")
        clip_global = model.encode_image(images)
    assert pyramid.out_indices == (0, 0, 0, 1)  # 2 blocks, DenseCLIP's (3, 5, 7, 11) scaled
    assert [tuple(f.shape[1:]) for f in out.features] == [
        (64, 8, 8), (64, 4, 4), (64, 2, 2), (64, 1, 1)
    ]  # fmt: skip
    assert_close_to_scale(out.dense, ref_dense, TOKEN_RTOL)
    assert_close_to_scale(out.global_embed, clip_global, TOKEN_RTOL)
    assert_close_to_scale(out.global_embed, ref_global, TOKEN_RTOL)
    assert pyramid.dense_level == 1  # 8 px patches: the stride-8 level


def test_vit_levels_are_block_outputs_through_the_reference_ops(tiny_model_names):
    model = _model(tiny_model_names["vit"])
    pyramid = ClipPyramid(model.visual, out_indices=[0, 1, 1, 1]).eval()
    outputs = {}
    hooks = [
        block.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o))
        for k, block in enumerate(model.visual.transformer.resblocks)
    ]
    images = _images(32)
    with torch.no_grad():
        model.encode_image(images)
        out = pyramid(images)
    for hook in hooks:
        hook.remove()
    grid = outputs[0][:, 1:].permute(0, 2, 1).reshape(2, 64, 4, 4)  # patch-8 grid of block 0
    levels = pyramid.levels
    assert isinstance(levels[1], nn.GroupNorm) and levels[1].num_groups == 1
    assert [type(m) for m in levels[0]] == [nn.GroupNorm, nn.ConvTranspose2d]
    assert [type(m) for m in levels[2]] == [nn.GroupNorm, nn.MaxPool2d]
    assert levels[3][1].kernel_size == 4
    with torch.no_grad():
        torch.testing.assert_close(out.features[0], levels[0](grid))
        last = outputs[1][:, 1:].permute(0, 2, 1).reshape(2, 64, 4, 4)
        torch.testing.assert_close(out.features[1], levels[1](last))
        gn = F.group_norm(last, 1, levels[3][0].weight, levels[3][0].bias)
        torch.testing.assert_close(out.features[3], F.max_pool2d(gn, 4))


def test_patch16_levels_follow_the_reference(vit16_name):
    model = _model(vit16_name)
    pyramid = ClipPyramid(model.visual, input_resolution=96).eval()
    kinds = [
        [type(m) for m in (op if isinstance(op, nn.Sequential) else [op])] for op in pyramid.levels
    ]
    assert kinds == [
        [nn.GroupNorm, nn.ConvTranspose2d, nn.BatchNorm2d, nn.GELU, nn.ConvTranspose2d],
        [nn.GroupNorm, nn.ConvTranspose2d],
        [nn.GroupNorm],
        [nn.GroupNorm, nn.MaxPool2d],
    ]
    assert model.visual.positional_embedding.shape == (1 + 36, 32)
    with torch.no_grad():
        out = pyramid(_images(96, batch=1))
    assert [f.shape[-1] for f in out.features] == [24, 12, 6, 3] and pyramid.dense_level == 2
    assert out.dense.shape == (1, 32, 6, 6)


def test_default_out_indices():
    assert default_out_indices(12) == (3, 5, 7, 11)
    assert default_out_indices(24) == (7, 11, 15, 23)
    assert default_out_indices(4) == (0, 1, 2, 3)


def test_class_embedding_twice_option(tiny_model_names):
    model = _model(tiny_model_names["vit"])
    images = _images(32)
    plain = ClipPyramid(model.visual).eval()
    twice = ClipPyramid(model.visual, cls_pos_includes_class_embedding=True).eval()
    with torch.no_grad():
        a, b = plain(images), twice(images)
        assert not torch.allclose(a.global_embed, b.global_embed)
        # same as adding the class embedding to the stored class position by hand
        model.visual.positional_embedding[0] += model.visual.class_embedding
        torch.testing.assert_close(plain(images).global_embed, b.global_embed)


def test_drop_path_is_stochastic_in_training_only(tiny_model_names):
    model = _model(tiny_model_names["vit"])
    pyramid = ClipPyramid(model.visual, drop_path_rate=0.5)
    assert pyramid.block_drop == [0.0, 0.5]
    images = _images(32)
    pyramid.eval()
    with torch.no_grad():
        reference = ClipPyramid(model.visual).eval()(images).dense
        torch.testing.assert_close(pyramid(images).dense, reference)
        pyramid.train()
        torch.manual_seed(0)
        runs = [pyramid(images).dense for _ in range(6)]
    assert any(not torch.allclose(r, runs[0]) for r in runs[1:])
    x = torch.ones(1000, 3)
    torch.manual_seed(0)
    dropped = drop_path(x, 0.25, True)
    values = dropped[:, 0].unique()
    torch.testing.assert_close(values, torch.tensor([0.0, 4 / 3]))
    assert torch.equal(dropped[:, 0:1].expand(-1, 3), dropped)  # one draw per sample
    assert 150 < int((dropped[:, 0] == 0).sum()) < 350
    assert torch.equal(drop_path(x, 0.25, False), x)


def test_errors(tiny_model_names):
    model = _model(tiny_model_names["rn"])
    with pytest.raises(ConfigError, match="ViT backbones only"):
        ClipPyramid(model.visual, drop_path_rate=0.1)
    with pytest.raises(ConfigError):
        ClipPyramid(nn.Linear(2, 2))
    vit = _model(tiny_model_names["vit"])
    with pytest.raises(ConfigError, match="out_indices"):
        ClipPyramid(vit.visual, out_indices=[0, 1, 2])
    pyramid = ClipPyramid(vit.visual)
    with pytest.raises(ConfigError):
        pyramid(torch.randn(3, 32, 32))
