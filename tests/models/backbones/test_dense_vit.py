"""Dense ViT modes against open_clip itself and against plain re-implementations of each formula."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch

from ovseg.errors import ConfigError
from ovseg.models.backbones.dense_vit import (
    DENSE_MODES,
    gaussian_neighbourhood_bias,
    interpolate_pos_embed,
    vit_dense_tokens,
)
from tests.conftest import randomize_
from tests.tolerance import assert_close_to_scale


@pytest.fixture
def vit(tiny_model_names):
    model = open_clip.create_model(tiny_model_names["vit"], pretrained=None)
    return randomize_(model, seed=1).eval()


# Our block re-implementation vs open_clip's (fused) attention: the same float32 math in another
# order through 2 blocks. Errors scale with the tokens' magnitude (|x| up to ~4), also where a
# token component is near 0: measured <= 3.6e-7 of max|x| on MKL's AVX-512/AVX2/SSE paths, so
# the bound is 1e-5 of it; a wrong formula (mode, projection, pooling) is off by O(1) of it.
TOKEN_RTOL = 1e-5


def _images(size=32, batch=2, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_vanilla_equals_open_clip_tokens(vit):
    images = _images()
    with torch.no_grad():
        clip_global = vit.encode_image(images)
    vit.visual.output_tokens = True
    with torch.no_grad():
        pooled, tokens = vit.visual(images)
        global_embed, dense = vit_dense_tokens(vit.visual, images, "vanilla")
    expected = (tokens @ vit.visual.proj).reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
    assert_close_to_scale(dense, expected, TOKEN_RTOL, "dense tokens")
    assert_close_to_scale(global_embed, pooled, TOKEN_RTOL, "global")
    assert_close_to_scale(global_embed, clip_global, TOKEN_RTOL, "global vs encode_image")


def test_avg_pool_vit_global_is_mean_of_tokens(tiny_model_names):
    model = randomize_(open_clip.create_model(tiny_model_names["vit_avg"]), seed=2).eval()
    images = _images()
    with torch.no_grad():
        global_embed, dense = vit_dense_tokens(model.visual, images, "vanilla")
        assert_close_to_scale(global_embed, model.encode_image(images), TOKEN_RTOL, "global")
    assert_close_to_scale(global_embed, dense.mean(dim=(2, 3)), TOKEN_RTOL, "mean of tokens")


# ---------------------------------------------------------------- independent reference
def _layer_norm(ln, x):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _softmax_rows(logits):
    e = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def _reference_last_block(block, x, mode, grid, std=5.0):
    """Loop-over-heads implementation written from the papers' formulas, not the library."""
    attn = block.attn
    width = x.shape[-1]
    heads = attn.num_heads
    hd = width // heads
    y = _layer_norm(block.ln_1, x)
    w_q, w_k, w_v = attn.in_proj_weight.split(width)
    b_q, b_k, b_v = attn.in_proj_bias.split(width)
    q, k, v = y @ w_q.T + b_q, y @ w_k.T + b_k, y @ w_v.T + b_v
    outs = []
    for head in range(heads):
        sl = slice(head * hd, (head + 1) * hd)
        qh, kh, vh = q[..., sl], k[..., sl], v[..., sl]
        s = 1.0 / math.sqrt(hd)
        if mode == "vanilla":
            a = _softmax_rows(qh @ kh.transpose(-1, -2) * s)
        elif mode == "maskclip":
            a = torch.eye(x.shape[1]).expand(x.shape[0], -1, -1)
        elif mode == "sclip":
            a = _softmax_rows(qh @ qh.transpose(-1, -2) * s) + _softmax_rows(
                kh @ kh.transpose(-1, -2) * s
            )
        elif mode == "clearclip":
            a = _softmax_rows(qh @ qh.transpose(-1, -2) * s)
        elif mode == "naclip":
            gh, gw = grid
            bias = torch.zeros(x.shape[1], x.shape[1])
            for i in range(gh * gw):
                for j in range(gh * gw):
                    di, dj = i // gw - j // gw, i % gw - j % gw
                    bias[1 + i, 1 + j] = math.exp(-(di * di + dj * dj) / (2 * std * std))
            a = _softmax_rows(kh @ kh.transpose(-1, -2) * s + bias)
        outs.append(a @ vh)
    out = torch.cat(outs, dim=-1) @ attn.out_proj.weight.T + attn.out_proj.bias
    if mode in ("vanilla", "maskclip", "sclip"):
        x = x + out
        h = _layer_norm(block.ln_2, x)
        h = block.mlp.c_proj(block.mlp.gelu(block.mlp.c_fc(h)))
        return x + h
    return out


def _reference_dense(visual, images, mode):
    x = visual.conv1(images)
    b, c, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(b, 1, -1), x], dim=1)
    x = x + interpolate_pos_embed(visual.positional_embedding, (gh, gw))
    x = visual.ln_pre(x)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    x = _reference_last_block(visual.transformer.resblocks[-1], x, mode, (gh, gw))
    x = _layer_norm(visual.ln_post, x) @ visual.proj
    return x[:, 1:].reshape(b, gh, gw, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("mode", DENSE_MODES)
@pytest.mark.parametrize("size", [32, 48])
def test_mode_equals_reference_formula(vit, mode, size):
    images = _images(size=size)
    with torch.no_grad():
        _, dense = vit_dense_tokens(vit.visual, images, mode)
        expected = _reference_dense(vit.visual, images, mode)
    # plain re-implementation (own softmax / layer norm): measured <= 4e-7 of the tokens' scale
    # (~4); 1e-4 absolute is 2.5e-5 of it
    torch.testing.assert_close(dense, expected, rtol=1e-4, atol=1e-4)


def test_modes_differ(vit):
    images = _images()
    with torch.no_grad():
        outs = {m: vit_dense_tokens(vit.visual, images, m)[1] for m in DENSE_MODES}
    for a in DENSE_MODES:
        for b in DENSE_MODES:
            if a < b:
                assert not torch.allclose(outs[a], outs[b]), (a, b)


def test_gaussian_bias_values():
    bias = gaussian_neighbourhood_bias((2, 3), std=5.0)
    assert bias.shape == (7, 7)
    assert torch.all(bias[0] == 0) and torch.all(bias[:, 0] == 0)
    assert torch.allclose(torch.diagonal(bias)[1:], torch.ones(6))
    # patch (0,0) to patch (1,2): squared distance 1 + 4
    assert bias[1, 6].item() == pytest.approx(math.exp(-5 / 50))


def test_pos_embed_interpolation_keeps_cls_and_matches_grid():
    pos = torch.randn(1 + 16, 8)
    out = interpolate_pos_embed(pos, (6, 5))
    assert out.shape == (31, 8)
    assert torch.equal(out[0], pos[0])
    assert torch.equal(interpolate_pos_embed(pos, (4, 4)), pos)


def test_unknown_mode_is_a_config_error(vit):
    with pytest.raises(ConfigError, match="dense_mode"):
        vit_dense_tokens(vit.visual, _images(), "bogus")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gelu", [False, True])
def test_the_fused_linear_layer_is_f_linear_on_this_cpu(dtype, gelu):
    # oneDNN takes bfloat16 only with AVX-512 BF16 / AMX; elsewhere F.linear runs (no error)
    from ovseg.models.backbones.dense_vit import _linear

    torch.manual_seed(0)
    x = torch.randn(2, 5, 16).to(dtype)
    weight, bias = torch.randn(8, 16).to(dtype), torch.randn(8).to(dtype)
    with torch.no_grad():
        got = _linear(x, weight, bias, gelu=gelu)
        want = torch.nn.functional.linear(x, weight, bias)
        want = torch.nn.functional.gelu(want) if gelu else want
    assert got.shape == (2, 5, 8) and got.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert_close_to_scale(got.float(), want.float(), rtol=tolerance)
