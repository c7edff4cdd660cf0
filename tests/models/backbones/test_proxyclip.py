"""ProxyCLIP's last block, backbone and sliding-window inference against its reference code.

The ``_reference_*`` functions are transcriptions of mc-lan/ProxyCLIP (``open_clip/
transformer.py`` ``VisionTransformer.forward`` / ``custom_attn`` / ``interpolate_pos_encoding``
and ``proxyclip_segmentor.py`` ``forward_feature`` / ``forward_slide`` / ``postprocess_result``),
kept in the reference's own layout (sequence-first tokens, one window per call, heads folded into
the batch). They are reference implementations for comparison only. Models are tiny and random:
an open_clip ViT registered at run time (tests/conftest.py) and a timm ViT as the proxy.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError, WeightsNotFoundError
from ovseg.models.backbones.proxyclip import (
    ProxyClipBackbone,
    clip_proxy_tokens,
    proxy_attention_weights,
)
from ovseg.pipelines.semantic import SemanticSegmenter
from ovseg.registry import BACKBONES
from tests.conftest import randomize_
from tests.models.backbones.test_proxy_vfm import assert_close_rel

BETA, GAMMA = 1.2, 3.0  # ProxyCLIPSegmentation defaults (proxyclip_segmentor.py line 31)
PROXY_TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 4, "img_size": 32}


# ---------------------------------------------------------------- reference transcriptions
def _reference_custom_attn(attn_layer, x, ex_feats, beta, gamma, token_size):
    """``VisionTransformer.custom_attn``: ``x`` is ``(L, B, C)`` after ``ln_1``."""
    num_heads = attn_layer.num_heads
    _, bsz, embed_dim = x.size()
    head_dim = embed_dim // num_heads
    q, k, v = F.linear(x, attn_layer.in_proj_weight, attn_layer.in_proj_bias).chunk(3, dim=-1)
    v = v.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    _, _, height, width = ex_feats.shape
    q_k = F.normalize(ex_feats.flatten(2, 3), dim=1)
    similarity = torch.einsum("b c m, b c n -> b m n", q_k, q_k)
    similarity = (similarity - torch.mean(similarity) * beta) * gamma
    similarity[similarity < 0.0] = float("-inf")
    mask = similarity.to(q.dtype).unsqueeze(1).repeat(1, num_heads, 1, 1)
    mask = mask.reshape(bsz * num_heads, mask.shape[2], mask.shape[3])
    attn_weights = F.softmax(mask, dim=-1)
    v = v[:, 1:, :].reshape(bsz * num_heads, token_size[0], token_size[1], head_dim)
    v = F.interpolate(v.permute(0, 3, 1, 2), size=(height, width), mode="bilinear",
                      align_corners=False)  # fmt: skip
    v = v.permute(0, 2, 3, 1).reshape(bsz * num_heads, height * width, head_dim)
    out = torch.bmm(attn_weights, v)
    out = out.transpose(0, 1).contiguous().view(-1, bsz, embed_dim)
    return attn_layer.out_proj(out)


def _reference_pos_encoding(visual, x, w, h):
    """``VisionTransformer.interpolate_pos_encoding`` (``w`` image height, ``h`` width)."""
    n = visual.positional_embedding.shape[0] - 1
    patch = visual.patch_size[0] if isinstance(visual.patch_size, tuple) else visual.patch_size
    w0, h0 = w // patch + 0.1, h // patch + 0.1
    side = int(math.sqrt(n))
    pos = visual.positional_embedding[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, scale_factor=(w0 / side, h0 / side), mode="bicubic")
    pos = pos.permute(0, 2, 3, 1).view(1, -1, pos.shape[1])
    return torch.cat((visual.positional_embedding[[0]].unsqueeze(0), pos), dim=1)


def _reference_clip_forward(visual, img, ex_feats, beta, gamma):
    """``VisionTransformer.forward`` with ``ex_feats``: tokens ``(B, I*J, D)``.

    The blocks before the last run through open_clip's own modules (batch-first in open_clip 3;
    the reference's bundled copy is sequence-first, the same computation).
    """
    _, _, w, h = img.shape
    x = visual.conv1(img)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.reshape(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    if x.shape[1] != visual.positional_embedding.shape[0]:
        x = x + _reference_pos_encoding(visual, x, w, h)
    else:
        x = x + visual.positional_embedding
    x = visual.ln_pre(x)
    patch = visual.patch_size[0] if isinstance(visual.patch_size, tuple) else visual.patch_size
    token_size = h // patch, w // patch
    for blk in visual.transformer.resblocks[:-1]:
        x = blk(x)
    last = visual.transformer.resblocks[-1]
    x = x.permute(1, 0, 2)
    x = _reference_custom_attn(last.attn, last.ln_1(x), ex_feats, beta, gamma, token_size)
    x = x.permute(1, 0, 2)
    return visual.ln_post(x) @ visual.proj


def _reference_forward_feature(backbone, img, query_features, beta=BETA, gamma=GAMMA):
    """``forward_feature``: logits ``(1, Q, H, W)`` of one window, upsampled to the window."""
    # the proxy model's patch features, as the segmentor reads them (tested in test_proxy_vfm)
    ex_feats = backbone.proxy_features(img)
    grid_i, grid_j = ex_feats.shape[-2:]
    feats = _reference_clip_forward(backbone.clip.model.visual, img, ex_feats, beta, gamma)
    feats = feats / feats.norm(dim=-1, keepdim=True)
    logits = feats @ query_features.T
    logits = logits.permute(0, 2, 1).reshape(-1, logits.shape[-1], grid_i, grid_j)
    return F.interpolate(logits, size=img.shape[-2:], mode="bilinear")


def _reference_compute_padsize(height, width, multiple):
    left = right = top = bottom = 0
    if width % multiple:
        lr = multiple - width % multiple
        left, right = lr // 2, lr - lr // 2
    if height % multiple:
        tb = multiple - height % multiple
        top, bottom = tb // 2, tb - tb // 2
    return left, right, top, bottom


def _reference_forward_slide(backbone, img, query_features, stride, crop, pad_multiple):
    """``forward_slide``; the reference pads windows to multiples of 56 (``pad_multiple``)."""
    _, _, h_img, w_img = img.shape
    h_grids = max(h_img - crop + stride - 1, 0) // stride + 1
    w_grids = max(w_img - crop + stride - 1, 0) // stride + 1
    preds = img.new_zeros((1, query_features.shape[0], h_img, w_img))
    count = img.new_zeros((1, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2, x2 = min(h_idx * stride + crop, h_img), min(w_idx * stride + crop, w_img)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            crop_img = img[:, :, y1:y2, x1:x2]
            height, width = crop_img.shape[2:]
            pad = _reference_compute_padsize(height, width, pad_multiple)
            if any(pad):
                crop_img = F.pad(crop_img, pad)
            logit = _reference_forward_feature(backbone, crop_img, query_features)
            if any(pad):
                logit = logit[:, :, pad[2] : pad[2] + height, pad[0] : pad[0] + width]
            preds += F.pad(logit, (x1, w_img - x2, y1, h_img - y2))
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def backbone(tiny_model_names):
    model = ProxyClipBackbone(
        tiny_model_names["vit"],
        proxy_model="dino_vitb8",
        proxy_kwargs=PROXY_TINY,
        random_proxy=True,
        templates="photo",
    )
    randomize_(model.clip.model, seed=3)
    return model


def _images(h, w, batch=2, seed=0):
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- tests
def test_attention_weights_follow_the_reference_formula():
    feats = _images(5, 6, batch=1, seed=1)[:, :3].repeat(1, 4, 1, 1)  # (1, 12, 5, 6)
    ours = proxy_attention_weights(feats, BETA, GAMMA)
    f = F.normalize(feats.flatten(2), dim=1)[0]
    sim = f.T @ f
    shifted = (sim - sim.mean() * BETA) * GAMMA
    expected = torch.where(shifted < 0, torch.zeros_like(shifted), shifted.exp())
    expected = expected / expected.sum(dim=-1, keepdim=True)
    assert_close_rel(ours[0], expected, rel=1e-5)
    assert (ours[0][shifted < 0] == 0).all() and (ours[0][shifted >= 0] > 0).all()


def test_mean_is_per_window_as_in_the_reference_one_window_loop():
    a, b = _images(4, 4, batch=1, seed=2), _images(4, 4, batch=1, seed=3) + 0.7
    both = proxy_attention_weights(torch.cat([a, b]), BETA, GAMMA)
    torch.testing.assert_close(both[0], proxy_attention_weights(a, BETA, GAMMA)[0])
    torch.testing.assert_close(both[1], proxy_attention_weights(b, BETA, GAMMA)[0])


def test_nearly_uniform_features_attend_to_themselves_instead_of_nan():
    # cosine similarities all near 1: every shifted entry (1 - 1.2) * 3 < 0; the reference
    # softmax of an all -inf row is NaN
    feats = torch.ones(1, 8, 3, 3) + 1e-3 * _images(3, 3, batch=1, seed=4)[:, :1]
    weights = proxy_attention_weights(feats, BETA, GAMMA)
    assert not torch.isnan(weights).any()
    torch.testing.assert_close(weights[0], torch.eye(9), rtol=0, atol=0)


@pytest.mark.parametrize("size", [32, 48])
def test_last_block_matches_reference_custom_attn(backbone, size):
    visual = backbone.clip.model.visual
    images = _images(size, size)
    with torch.no_grad():
        ex = backbone.proxy_features(images)
        attn = proxy_attention_weights(ex, BETA, GAMMA)
        ours = clip_proxy_tokens(visual, images, attn, tuple(ex.shape[-2:]))
        # the reference runs one window per call (its mean is over the batch it gets)
        refs = [_reference_clip_forward(visual, images[i : i + 1], ex[i : i + 1], BETA, GAMMA)
                for i in range(2)]  # fmt: skip
    grid = ex.shape[-1]
    assert ours.shape == (2, backbone.embed_dim, grid, grid) and grid == size // 4
    ref = torch.cat(refs).reshape(2, grid, grid, -1).permute(0, 3, 1, 2)
    assert_close_rel(ours, ref)


def test_encode_dense_is_on_the_proxy_grid_and_uses_its_normalisation(backbone):
    images = _images(32, 48)
    dense = backbone.encode_dense(images)
    assert dense.shape == (2, backbone.embed_dim, 8, 12)  # proxy patch 4, CLIP patch 8
    rgb = images * backbone.std + backbone.mean
    imagenet = (rgb - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        assert_close_rel(backbone.proxy_features(images), backbone.proxy(imagenet), rel=1e-5)
    # other beta / gamma change the tokens
    backbone.gamma = 1.0
    assert (backbone.encode_dense(images) - dense).abs().max() > 1e-3 * dense.abs().max()


def test_sliding_window_segmentation_matches_reference(backbone):
    """SemanticSegmenter + ProxyClipBackbone == forward_slide + postprocess_result."""
    seg = SemanticSegmenter(
        backbone,
        logit_scale=40.0,
        inference={"short_side": None, "mode": "slide", "crop_size": 32, "stride": 16,
                   "batch_size": 3},
        postprocess={"prob_threshold": 0.2, "background_index": 0},
    )  # fmt: skip
    vocab = ["background|sky|wall", "cat", "dog|puppy"]
    image = torch.rand(1, 3, 40, 72, generator=torch.Generator().manual_seed(5))
    features = seg.encode(image)
    v = seg.resolve_vocabulary(vocab)
    scores = seg.query_scores(features, v)
    result = seg.predict(features, v)

    text = backbone.encode_text(v.queries)
    with torch.no_grad():
        # crops 32 = 4 x 8: the reference's padding to multiples of 56 leaves its 224 / 336
        # windows as they are; 8 does the same for these tiny windows
        ref = _reference_forward_slide(backbone, backbone.normalize(image), text, 16, 32, 8)
    assert_close_rel(scores, ref[0])
    probs = (ref[0] * 40.0).softmax(0)
    query_idx = v.query_to_class
    cls_index = F.one_hot(query_idx).T.view(3, len(query_idx), 1, 1)
    probs = (probs.unsqueeze(0) * cls_index).max(1)[0]
    labels = probs.argmax(0)
    labels[probs.max(0)[0] < 0.2] = 0
    assert (torch.from_numpy(result.sem_seg) == labels).all()


def test_built_from_config_and_missing_proxy_weights(tiny_model_names, tmp_path):
    cfg = {
        "type": "ProxyClipBackbone",
        "model_name": tiny_model_names["vit"],
        "proxy_model": "dinov2_vitb14_reg",
        "proxy_kwargs": {**PROXY_TINY, "patch_size": 7, "img_size": 28},
        "random_proxy": True,
        "templates": "photo",
    }
    model = BACKBONES.build(cfg)
    assert model.encode_dense(_images(28, 28, batch=1)).shape[-2:] == (4, 4)
    assert model.encode_text(["cat", "dog"]).shape == (2, model.embed_dim)
    with pytest.raises(WeightsNotFoundError, match="dinov2_vitb14_reg4_pretrain.pth"):
        BACKBONES.build({**cfg, "random_proxy": False})
    with pytest.raises(WeightsNotFoundError, match="dl.fbaipublicfiles.com/dinov2"):
        BACKBONES.build({**cfg, "random_proxy": False, "proxy_checkpoint": str(tmp_path / "x")})
    with pytest.raises(ConfigError, match="ViT"):
        BACKBONES.build({**cfg, "model_name": tiny_model_names["rn"]})
