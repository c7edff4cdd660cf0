"""ProxyCLIP's proxy models: official checkpoint layouts, and features against the references.

The ``_reference_*`` functions below are transcriptions of the official forward passes that
ProxyCLIP calls (facebookresearch/dino ``vision_transformer.py`` ``get_intermediate_layers``,
facebookresearch/dinov2 ``models/vision_transformer.py`` ``get_intermediate_layers``, ProxyCLIP's
``mae/models_vit.py`` ``forward_features`` with ``mae/pos_embed.py``), written over the official
state-dict keys with plain tensor operations. They are reference implementations for comparison
only. Each test writes a tiny random checkpoint in the official layout, loads it through
:class:`ProxyVisionModel` (ovseg.weights, key mapping onto timm) and compares the features.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ovseg.errors import CheckpointError, ConfigError, WeightsNotFoundError
from ovseg.models.backbones.proxy_vfm import (
    PROXY_MODELS,
    ProxyVisionModel,
    resample_patch_pos,
)

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}
HEADS = TINY["num_heads"]


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    """Max abs difference within ``rel`` x the largest magnitude of ``expected``.

    Float32 rounding through two 32-wide transformer blocks stays near 1e-6 of the values'
    scale, whatever the summation order (fused vs explicit attention, AVX-512 or not); 1e-4
    leaves a wide margin, while a wrong position rule, token order or norm changes the features
    by more than 1e-2 of their scale (checked by the negative tests below).
    """
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    assert diff <= rel * scale, f"max diff {diff:.3g} > {rel} x {scale:.3g}"


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        value = torch.randn(shape, generator=g) * 0.3
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            value = value + 1.0
        out[key] = value
    return out


def _official_vit_shapes(dim, depth, patch, grid, *, ls=False, registers=0, mask=False):
    """Official DINO / DINOv2 / MAE encoder keys and shapes (the torch.hub state dicts)."""
    shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1 + grid * grid, dim),
        "patch_embed.proj.weight": (dim, 3, patch, patch),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    if registers:
        shapes["register_tokens"] = (1, registers, dim)
    if mask:
        shapes["mask_token"] = (1, dim)
    for i in range(depth):
        p = f"blocks.{i}."
        shapes.update({
            p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
            p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
            p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
            p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
            p + "mlp.fc1.weight": (4 * dim, dim), p + "mlp.fc1.bias": (4 * dim,),
            p + "mlp.fc2.weight": (dim, 4 * dim), p + "mlp.fc2.bias": (dim,),
        })  # fmt: skip
        if ls:
            shapes[p + "ls1.gamma"] = (dim,)
            shapes[p + "ls2.gamma"] = (dim,)
    return shapes


# ---------------------------------------------------------------- reference transcriptions
def _reference_block(sd, prefix, x, heads, layerscale):
    """One DINO / DINOv2 / timm ViT block: x + ls1(attn(norm1 x)); x + ls2(mlp(norm2 x))."""
    batch, length, dim = x.shape
    y = F.layer_norm(x, (dim,), sd[prefix + "norm1.weight"], sd[prefix + "norm1.bias"], 1e-6)
    qkv = F.linear(y, sd[prefix + "attn.qkv.weight"], sd[prefix + "attn.qkv.bias"])
    q, k, v = qkv.reshape(batch, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (dim // heads) ** -0.5).softmax(dim=-1)
    y = (attn @ v).transpose(1, 2).reshape(batch, length, dim)
    y = F.linear(y, sd[prefix + "attn.proj.weight"], sd[prefix + "attn.proj.bias"])
    x = x + (y * sd[prefix + "ls1.gamma"] if layerscale else y)
    y = F.layer_norm(x, (dim,), sd[prefix + "norm2.weight"], sd[prefix + "norm2.bias"], 1e-6)
    y = F.linear(y, sd[prefix + "mlp.fc1.weight"], sd[prefix + "mlp.fc1.bias"])
    y = F.linear(F.gelu(y), sd[prefix + "mlp.fc2.weight"], sd[prefix + "mlp.fc2.bias"])
    return x + (y * sd[prefix + "ls2.gamma"] if layerscale else y)


def _reference_pos_dino(pos_embed, x, w, h, patch, offset=0.1, antialias=False):
    """DINO / DINOv2 ``interpolate_pos_encoding`` (``w`` = image height, ``h`` = width there)."""
    npatch, n = x.shape[1] - 1, pos_embed.shape[1] - 1
    if npatch == n and w == h:
        return pos_embed
    pos = pos_embed.float()
    m = int(math.sqrt(n))
    w0, h0 = w // patch, h // patch
    kwargs = (
        {"scale_factor": ((w0 + offset) / m, (h0 + offset) / m)} if offset else {"size": (w0, h0)}
    )
    patch_pos = F.interpolate(
        pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2),
        mode="bicubic",
        antialias=antialias,
        **kwargs,
    )
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])
    return torch.cat([pos[:, :1], patch_pos], dim=1)


def _reference_dino_features(sd, images, patch, depth, *, layerscale, registers=0, **pos_kw):
    """``get_intermediate_layers(x)[0]`` patch tokens reshaped to ``(B, C, H/p, W/p)``."""
    batch, _, w, h = images.shape
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(batch, -1, -1), x], dim=1)
    x = x + _reference_pos_dino(sd["pos_embed"], x, w, h, patch, **pos_kw)
    if registers:
        reg = sd["register_tokens"].expand(batch, -1, -1)
        x = torch.cat([x[:, :1], reg, x[:, 1:]], dim=1)
    for i in range(depth):
        x = _reference_block(sd, f"blocks.{i}.", x, HEADS, layerscale)
    x = F.layer_norm(x, (x.shape[-1],), sd["norm.weight"], sd["norm.bias"], 1e-6)
    x = x[:, 1 + registers :]
    return x.reshape(batch, w // patch, h // patch, -1).permute(0, 3, 1, 2)


def _reference_mae_features(sd, images, patch, depth, crop):
    """ProxyCLIP's MAE path: positions resized once at load, window resized to crop x crop."""
    pos = sd["pos_embed"]
    orig, new = int(math.sqrt(pos.shape[1] - 1)), crop // patch
    if orig != new:
        tokens = pos[:, 1:].reshape(-1, orig, orig, pos.shape[-1]).permute(0, 3, 1, 2)
        tokens = F.interpolate(tokens, size=(new, new), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:, :1], tokens.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)
    images = F.interpolate(images, size=(crop, crop), mode="bilinear", align_corners=False)
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + pos
    for i in range(depth):
        x = _reference_block(sd, f"blocks.{i}.", x, HEADS, False)
    x = F.layer_norm(x[:, 1:], (x.shape[-1],), sd["norm.weight"], sd["norm.bias"], 1e-6)
    return x.reshape(x.shape[0], new, new, -1).permute(0, 3, 1, 2)


def _images(h, w, batch=2, seed=0):
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _save(state, path):
    torch.save(state, path)
    return path


# ---------------------------------------------------------------- tests
def test_dino_checkpoint_loads_and_features_match_reference(tmp_path):
    # dino_vitb8 layout, tiny: patch 8, trained at 32 px (4 x 4 positions)
    sd = _random_state(_official_vit_shapes(32, 2, 8, 4), seed=1)
    ckpt = _save(sd, tmp_path / "dino_vitbase8_pretrain.pth")
    model = ProxyVisionModel("dino_vitb8", ckpt, timm_kwargs={**TINY, "patch_size": 8,
                                                              "img_size": 32})  # fmt: skip
    images = _images(48, 48)  # 6 x 6 grid: positions resized from 4 x 4
    with torch.no_grad():
        ours = model(images)
        ref = _reference_dino_features(sd, images, 8, 2, layerscale=False)
    assert ours.shape == (2, 32, 6, 6) and model.grid_size(48, 48) == (6, 6)
    assert_close_rel(ours, ref)
    # at the training grid the positions are used as they are
    with torch.no_grad():
        assert_close_rel(
            model(_images(32, 32)),
            _reference_dino_features(sd, _images(32, 32), 8, 2, layerscale=False),
        )
    # the scale-factor rule matters: a plain size-based resize gives other features
    with torch.no_grad():
        model.spec = PROXY_MODELS["mae_vitb16"]
        other = model(images)
    assert (other - ref).abs().max() > 1e-2 * ref.abs().max()


@pytest.mark.parametrize("registers", [False, True])
def test_dinov2_checkpoint_loads_and_features_match_reference(tmp_path, registers):
    name = "dinov2_vits14_reg" if registers else "dinov2_vits14"
    # official layout: positions include the class token, registers after it, a mask token
    shapes = _official_vit_shapes(32, 2, 7, 6, ls=True, registers=4 if registers else 0, mask=True)
    sd = _random_state(shapes, seed=2)
    ckpt = _save(sd, tmp_path / PROXY_MODELS[name].file)
    model = ProxyVisionModel(name, ckpt, timm_kwargs={**TINY, "patch_size": 7, "img_size": 42})
    images = _images(28, 35)  # 4 x 5 grid, downsampled from 6 x 6: antialiasing matters
    pos_kw = {"offset": 0.0, "antialias": True} if registers else {"offset": 0.1}
    with torch.no_grad():
        ours = model(images)
        ref = _reference_dino_features(sd, images, 7, 2, layerscale=True,
                                       registers=4 if registers else 0, **pos_kw)  # fmt: skip
    assert ours.shape == (2, 32, 4, 5)
    assert_close_rel(ours, ref)


def test_dinov2_register_layout_moves_class_position_into_cls_token(tmp_path):
    shapes = _official_vit_shapes(32, 1, 7, 4, ls=True, registers=4, mask=True)
    sd = _random_state(shapes, seed=3)
    model = ProxyVisionModel(
        "dinov2_vits14_reg",
        _save(sd, tmp_path / "w.pth"),
        timm_kwargs={**TINY, "depth": 1, "patch_size": 7, "img_size": 28},
    )
    timm_sd = model.model.state_dict()
    torch.testing.assert_close(timm_sd["reg_token"], sd["register_tokens"], rtol=0, atol=0)
    torch.testing.assert_close(
        timm_sd["cls_token"], sd["cls_token"] + sd["pos_embed"][:, :1], rtol=0, atol=0
    )
    torch.testing.assert_close(timm_sd["pos_embed"], sd["pos_embed"][:, 1:], rtol=0, atol=0)


def test_mae_checkpoint_with_decoder_keys_loads_and_matches_reference(tmp_path):
    sd = _random_state(_official_vit_shapes(32, 2, 8, 4), seed=4)
    wrapped = {"model": {**sd, "decoder_embed.weight": torch.zeros(8, 32),
                         "mask_token": torch.zeros(1, 1, 8)}}  # fmt: skip
    ckpt = _save(wrapped, tmp_path / "mae_pretrain_vit_base.pth")
    model = ProxyVisionModel(
        "mae_vitb16", ckpt, timm_kwargs={**TINY, "patch_size": 8, "img_size": 32}, image_size=48
    )
    images = _images(40, 40)  # a window that the reference resizes to the 48 px crop
    with torch.no_grad():
        ours = model(images)
        ref = _reference_mae_features(sd, images, 8, 2, crop=48)
    assert ours.shape == (2, 32, 6, 6)
    assert_close_rel(ours, ref)


def test_sam_encoder_features_match_segment_anything(tmp_path):
    from ovseg.models.decoders.sam_build import build_sam

    sam = build_sam("ovseg-sam-tiny")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in sam.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = _save(sam.state_dict(), tmp_path / "sam_vit_b_01ec64.pth")
    model = ProxyVisionModel("sam_vitb", ckpt, arch="ovseg-sam-tiny")
    side = sam.image_encoder.img_size
    images = _images(40, 40)
    with torch.no_grad():
        ours = model(images)
        resized = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
        ref = sam.image_encoder(resized)
    assert model.grid_size(40, 40) == tuple(ref.shape[-2:])
    assert_close_rel(ours, ref)


@pytest.mark.parametrize("name", sorted(PROXY_MODELS))
def test_missing_weights_name_the_official_file_and_source(tmp_path, name):
    spec = PROXY_MODELS[name]
    with pytest.raises(WeightsNotFoundError) as err:
        ProxyVisionModel(name, tmp_path / "absent.pth")
    assert spec.file in str(err.value) and spec.url in str(err.value)
    with pytest.raises(WeightsNotFoundError, match="proxy_checkpoint"):
        ProxyVisionModel(name, None)


def test_wrong_checkpoint_is_refused(tmp_path):
    sd = _random_state(_official_vit_shapes(32, 1, 8, 4), seed=5)
    with pytest.raises(CheckpointError, match="missing"):
        ProxyVisionModel(
            "dino_vitb8",
            _save(sd, tmp_path / "w.pth"),
            timm_kwargs={**TINY, "patch_size": 8, "img_size": 32},  # depth 2: block 1 missing
        )
    with pytest.raises(ConfigError, match="Unknown proxy_model"):
        ProxyVisionModel("dino_vitz8", None, random_init=True)


@pytest.mark.parametrize("mode", ["offset", "size", "size_antialias"])
def test_resample_patch_pos_keeps_matching_grids_and_reaches_the_target(mode):
    pos = torch.randn(16, 8)
    assert resample_patch_pos(pos, (4, 4), mode) is pos
    assert resample_patch_pos(pos, (6, 3), mode).shape == (18, 8)
    with pytest.raises(ConfigError):
        resample_patch_pos(torch.randn(15, 8), (4, 4), mode)
