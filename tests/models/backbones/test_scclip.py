"""SC-CLIP's dense tokens, backbone and sliding-window inference against its reference code.

The ``_reference_*`` functions are transcriptions of SuleBai/SC-CLIP (``clip/model.py``
``lof_pytorch``, ``VisionTransformer.forward`` / ``custom_attn`` / ``adaptively_aggregate`` /
``mean_interpolation`` at commit 0417ba9, and ``scclip_segmentor.py`` ``forward_slide`` /
``postprocess_result``), kept in the reference's layout (sequence-first tokens, one window per
call, heads folded into the batch). They are reference implementations for comparison only.
The blocks before the last run through open_clip's own modules (the reference's CLIP copy has
the same blocks). Models are tiny and random: a six-block open_clip ViT registered at run time
(tests/conftest.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.models.backbones.scclip import (
    ScClipBackbone,
    aggregate,
    fill_anomalies,
    lof_outliers,
    norm_outliers,
    scclip_dense_tokens,
)
from ovseg.pipelines.semantic import SemanticSegmenter
from ovseg.registry import BACKBONES
from tests.models.backbones.test_proxy_vfm import assert_close_rel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# block indices for the six-block test ViT (five blocks before the last)
TINY_IDX = dict(pre_adjust_idx=3, post_adjust_idx=1, multi_start_idx=1, multi_end_idx=4)
RES_CLS = 0.3  # VisionTransformer.res_cls (clip/model.py line 252)
BETA = 0.4  # VisionTransformer.beta: the similarity threshold (clip/model.py line 247)


# ---------------------------------------------------------------- reference transcriptions
def _reference_lof(x, n_neighbors=30, contamination=0.05):
    """``lof_pytorch``: ``x`` ``(N, C)`` -> outlier indices."""
    distances = torch.norm(x[:, None] - x[None, :], dim=2, p=2) ** 2
    knn_distances, knn_indices = torch.topk(distances, k=n_neighbors + 1, largest=False)
    knn_distances, knn_indices = knn_distances[:, 1:], knn_indices[:, 1:]
    k_distances = knn_distances[:, -1].unsqueeze(1).expand_as(knn_distances)
    reach_distances = torch.max(knn_distances, k_distances)
    lrd = n_neighbors / torch.nan_to_num(reach_distances.mean(dim=1), nan=1e-6)
    lof = (lrd[knn_indices] / lrd.unsqueeze(1)).mean(dim=1)
    threshold = torch.quantile(lof.to(torch.float32), 1 - contamination)
    return torch.where(lof > threshold)[0]


def _reference_mean_interpolation(feature_map, top_indices):
    """``mean_interpolation`` with ``top_indices`` a list of ``(row, column)``."""
    _, channels, height, width = feature_map.shape
    kernel = torch.ones(channels, 1, 3, 3)
    kernel[:, 0, 1, 1] = 0
    mask = torch.ones((height, width))
    indices = torch.tensor(top_indices, dtype=torch.long)
    mask[indices[:, 0], indices[:, 1]] = 0
    mask = mask[None, None]
    padded = F.pad(feature_map * mask, (1, 1, 1, 1), mode="constant", value=0)
    padded_mask = F.pad(mask, (1, 1, 1, 1), mode="constant", value=0)
    neighbor_sum = F.conv2d(padded, kernel, groups=channels)
    valid = F.conv2d(padded_mask, kernel[:, :1], groups=1)
    valid_mask = (valid > 0).float()
    safe = valid.clone()
    safe[safe == 0] = 1
    mean_neighbors = neighbor_sum / safe
    top_mask = torch.zeros((height, width))
    top_mask[indices[:, 0], indices[:, 1]] = 1
    update = top_mask[None, None] * valid_mask
    return feature_map * (1 - update) + mean_neighbors * update


def _reference_custom_attn(attn_layer, x, mid_simi):
    """``custom_attn``: ``x`` ``(N, 1, C)`` after ``ln_1``."""
    num_heads = attn_layer.num_heads
    _, bsz, embed_dim = x.size()
    head_dim = embed_dim // num_heads
    scale = head_dim**-0.5
    q, k, v = F.linear(x, attn_layer.in_proj_weight, attn_layer.in_proj_bias).chunk(3, dim=-1)
    k = k.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    v = v.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    mid_simi = (mid_simi - torch.mean(mid_simi)) * 3.0
    mid_simi[mid_simi < 0.0] = float("-inf")
    mid_simi = mid_simi.repeat(num_heads, 1, 1)
    attn_weights = F.softmax(mid_simi, dim=-1)
    attn_weights += F.softmax(torch.bmm(k, k.transpose(1, 2)) * scale, dim=-1)
    attn_weights /= 2
    out = torch.bmm(attn_weights, v)
    out = out.transpose(0, 1).contiguous().view(-1, bsz, embed_dim)
    return attn_layer.out_proj(out)


def _reference_aggregate(feats, corrs):
    """``adaptively_aggregate``: ``feats`` ``(N, 1, C)``, ``corrs`` ``(1, N, N)``."""
    corrs = corrs / (corrs.sum(dim=-1, keepdim=True) + 1e-6)
    return torch.matmul(corrs, feats.permute(1, 0, 2)).permute(1, 0, 2)


def _reference_forward(visual, img, idx, res_cls=RES_CLS, beta=BETA, outliers="lof"):
    """``VisionTransformer.forward(img, return_all=True)`` for one window -> ``(1, N, D)``.

    ``outliers='norm'`` is the first commit's detector (74471da: the ten largest norms).
    """
    from ovseg.models.backbones.dense_vit import vit_input_tokens

    x, (feat_w, feat_h) = vit_input_tokens(visual, img)  # conv1 .. ln_pre, tested elsewhere
    width = x.shape[-1]
    blocks = visual.transformer.resblocks
    feats_list = []
    for i, blk in enumerate(blocks[:-1], start=1):
        x = blk(x)
        feats_list.append(x.permute(1, 0, 2))
        if i == len(blocks) - 1:
            x = x.permute(1, 0, 2)  # sequence-first from here on, as in the reference
            cls_token = x[:1]
            if outliers == "lof":
                indices = _reference_lof(x[1:].squeeze(1))
            else:
                indices = torch.sort(torch.norm(x[1:].squeeze(1), dim=1), descending=True)[1][:10]
            top = [(int(j) // feat_w, int(j) % feat_w) for j in indices]
            fmap = x[1:].permute(1, 2, 0).reshape(1, width, feat_w, feat_h)
            fmap = _reference_mean_interpolation(fmap, top)
            x = fmap.reshape(1, width, feat_w * feat_h).permute(2, 0, 1)
    feats = feats_list[idx["pre_adjust_idx"]][1:].clone()
    feats = feats.permute(1, 2, 0).reshape(1, width, feat_w, feat_h)
    feats = _reference_mean_interpolation(feats, top)
    feats = feats.reshape(1, width, feat_w * feat_h).permute(2, 0, 1)
    feats = feats / feats.norm(dim=2, keepdim=True)
    before = torch.matmul(feats.permute(1, 0, 2), feats.permute(1, 2, 0))
    mid_simi = before.clone()
    before[before < beta] = 0.0
    x = _reference_aggregate(x, before)
    last = blocks[-1]
    x = _reference_custom_attn(last.attn, last.ln_1(x), mid_simi) + res_cls * cls_token
    feats = feats_list[idx["post_adjust_idx"]][1:].clone()
    feats = feats / feats.norm(dim=2, keepdim=True)
    after = torch.matmul(feats.permute(1, 0, 2), feats.permute(1, 2, 0))
    after[after < beta] = 0.0
    x = _reference_aggregate(x, after)
    re_feats = torch.zeros_like(feats_list[0])
    for i in range(idx["multi_start_idx"], idx["multi_end_idx"]):
        re_feats += feats_list[i]
    cls_token = re_feats[:1]
    re_feats = _reference_custom_attn(last.attn, last.ln_1(re_feats[1:]), mid_simi)
    re_feats = _reference_aggregate(re_feats + res_cls * cls_token, after)
    x = x + re_feats
    return visual.ln_post(x.permute(1, 0, 2)) @ visual.proj


def _reference_forward_slide(visual, img, query_features, idx, stride, crop):
    """``forward_slide`` + ``forward_feature``: averaged window logits ``(1, Q, H, W)``."""
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
            feats = _reference_forward(visual, crop_img, idx)
            feats = feats / feats.norm(dim=-1, keepdim=True)
            logits = feats @ query_features.T
            w, h = crop_img.shape[-2] // 8, crop_img.shape[-1] // 8
            logits = logits.permute(0, 2, 1).reshape(-1, logits.shape[-1], w, h)
            logits = F.interpolate(logits, size=crop_img.shape[-2:], mode="bilinear")
            preds += F.pad(logits, (x1, w_img - x2, y1, h_img - y2))
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def backbone(tiny_model_names):
    """open_clip's own initialisation (seeded), layer-norm and bias terms moved off 1 / 0.

    Larger random weights (``tests.conftest.randomize_``) make six blocks collapse every patch
    token onto nearly the same vector, which would hide errors in how positions are mixed;
    these keep the tokens of different positions apart (checked in the parity test).
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ScClipBackbone(tiny_model_names["vit_deep"], templates="photo", **TINY_IDX)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


def _images(h, w, batch=2, seed=0):
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- pieces
def test_lof_matches_reference_and_finds_a_planted_outlier():
    tokens = torch.randn(64, 12, generator=torch.Generator().manual_seed(1))
    tokens[17] += 8.0  # far from everything
    ours = lof_outliers(tokens[None])[0]
    ref = torch.zeros(64, dtype=torch.bool)
    ref[_reference_lof(tokens)] = True
    assert torch.equal(ours, ref)
    assert ours[17] and 1 <= int(ours.sum()) <= 4  # about 5 % of 64 above the 95th percentile


def test_lof_is_per_window_and_tolerates_few_tokens():
    a, b = _images(8, 8, batch=1, seed=3), _images(8, 8, batch=1, seed=4) * 3 + 1
    tokens = torch.cat([a, b]).flatten(2).transpose(1, 2).repeat(1, 1, 5)  # (2, 64, 15)
    both = lof_outliers(tokens)
    assert torch.equal(both[0], lof_outliers(tokens[:1])[0])
    assert torch.equal(both[1], lof_outliers(tokens[1:])[0])
    # 20 tokens < 31: the reference's topk fails; here 19 neighbours are used
    assert lof_outliers(tokens[:1, :20]).shape == (1, 20)


def test_norm_detector_marks_the_largest_norms():
    tokens = torch.randn(1, 30, 4, generator=torch.Generator().manual_seed(5))
    tokens[0, [2, 7]] *= 50
    marked = norm_outliers(tokens, count=2)[0]
    assert marked.nonzero().flatten().tolist() == [2, 7]


def test_fill_anomalies_matches_reference_mean_interpolation_on_a_square_grid():
    fmap = _images(6, 6, batch=1, seed=6).repeat(1, 2, 1, 1)  # (1, 6, 6, 6)
    marked = [(0, 0), (2, 3), (2, 4), (5, 1)]
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    for r, c in marked:
        mask[0, r, c] = True
    ours = fill_anomalies(fmap, mask)
    torch.testing.assert_close(ours, _reference_mean_interpolation(fmap, marked))
    # (0, 0): mean of its three in-grid neighbours; unmarked positions unchanged
    torch.testing.assert_close(ours[0, :, 0, 0], fmap[0, :, :2, :2].flatten(1)[:, 1:].mean(1))
    assert torch.equal(
        ours[~mask.unsqueeze(1).expand_as(ours)], fmap[~mask.unsqueeze(1).expand_as(fmap)]
    )


def test_fill_anomalies_uses_true_rows_and_columns_on_wide_grids():
    fmap = torch.arange(3 * 5, dtype=torch.float32).reshape(1, 1, 3, 5)
    mask = torch.zeros(1, 3, 5, dtype=torch.bool)
    mask[0, 1, 4] = True  # right edge, middle row
    ours = fill_anomalies(fmap, mask)
    expected = fmap[0, 0, 0:3, 3:5].flatten().tolist()
    expected.remove(fmap[0, 0, 1, 4].item())
    assert ours[0, 0, 1, 4].item() == pytest.approx(sum(expected) / 5)
    changed = (ours != fmap).nonzero().tolist()
    assert changed == [[0, 0, 1, 4]]
    # a marked position whose neighbours are all marked keeps its value
    all_marked = fill_anomalies(fmap, torch.ones(1, 3, 5, dtype=torch.bool))
    assert torch.equal(all_marked, fmap)


def test_aggregate_drops_low_similarities_and_normalises_rows():
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]])
    sim = torch.tensor([[[1.0, 0.3, 0.5], [0.3, 1.0, 0.39], [0.5, 0.39, 1.0]]])
    out = aggregate(tokens, sim, 0.4)
    expected = _reference_aggregate(
        tokens.permute(1, 0, 2), sim.masked_fill(sim < 0.4, 0.0)
    ).permute(1, 0, 2)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[0, 1], tokens[0, 1] / (1 + 1e-6))


# ---------------------------------------------------------------- the whole computation
@pytest.mark.parametrize(("size", "detector"), [(64, "lof"), (72, "lof"), (64, "norm")])
def test_dense_tokens_match_reference_forward(backbone, size, detector):
    visual = backbone.model.visual
    images = _images(size, size)
    with torch.no_grad():
        ours = scclip_dense_tokens(visual, images, res_cls=RES_CLS, anomaly_detector=detector,
                                   **TINY_IDX)  # fmt: skip
        refs = [_reference_forward(visual, images[i : i + 1], TINY_IDX, outliers=detector)
                for i in range(2)]  # fmt: skip
    grid = size // 8
    assert ours.shape == (2, backbone.embed_dim, grid, grid)
    ref = torch.cat(refs).reshape(2, grid, grid, -1).permute(0, 3, 1, 2)
    assert_close_rel(ours, ref)
    # the positions differ (a collapsed model would make this comparison meaningless)
    assert ref.std(dim=(2, 3)).mean() > 1e-2 * ref.abs().max()


def test_every_step_changes_the_tokens(backbone):
    """Each setting reaches the output (the parity test above would notice a dropped step)."""
    visual = backbone.model.visual
    images = _images(64, 64, batch=1, seed=7)
    with torch.no_grad():
        base = scclip_dense_tokens(visual, images, **TINY_IDX)
        variants = {
            "no res_cls": scclip_dense_tokens(visual, images, **{**TINY_IDX}, res_cls=0.0),
            "pre block": scclip_dense_tokens(visual, images, **{**TINY_IDX, "pre_adjust_idx": 2}),
            "post block": scclip_dense_tokens(visual, images, **{**TINY_IDX, "post_adjust_idx": 2}),
            "fusion end": scclip_dense_tokens(visual, images, **{**TINY_IDX, "multi_end_idx": 5}),
            "threshold": scclip_dense_tokens(visual, images, **TINY_IDX, sim_threshold=0.0),
            "detector": scclip_dense_tokens(visual, images, **TINY_IDX, anomaly_detector="norm"),
        }
    for name, out in variants.items():
        assert (out - base).abs().max() > 1e-2 * base.abs().max(), name


def test_backbone_encodes_windows_and_keeps_clips_global_embedding(backbone):
    images = _images(64, 80)
    dense = backbone.encode_dense(images)
    assert dense.shape == (2, backbone.embed_dim, 8, 10) and dense.dtype == torch.float32
    pooled, dense2 = backbone.encode_dense_and_global(images)
    torch.testing.assert_close(dense2, dense)
    native = _images(32, 32)  # open_clip's encode_image takes the native size only
    assert_close_rel(backbone.encode_dense_and_global(native)[0], backbone.encode_image(native))
    assert pooled.shape == (2, backbone.embed_dim)
    # per window: a batch gives what single windows give
    assert_close_rel(dense[1:], backbone.encode_dense(images[1:]))


def test_sliding_window_segmentation_matches_reference(backbone):
    """SemanticSegmenter + ScClipBackbone == forward_slide + postprocess_result."""
    seg = SemanticSegmenter(
        backbone,
        logit_scale=50.0,
        inference={"short_side": None, "mode": "slide", "crop_size": 64, "stride": 32,
                   "batch_size": 2},
        postprocess={"prob_threshold": 0.15, "area_threshold": 0.1, "background_index": 0},
    )  # fmt: skip
    vocab = ["background|sky|wall", "cat", "dog|puppy"]
    image = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(5))
    features = seg.encode(image)
    v = seg.resolve_vocabulary(vocab)
    scores = seg.query_scores(features, v)
    result = seg.predict(features, v)

    text = backbone.encode_text(v.queries)
    with torch.no_grad():
        ref = _reference_forward_slide(
            backbone.model.visual, backbone.normalize(image), text, TINY_IDX, 32, 64
        )
    assert_close_rel(scores, ref[0])
    # postprocess_result (scclip_segmentor.py lines 154-188)
    probs = (ref[0] * 50.0).softmax(0)
    query_idx = v.query_to_class
    cls_index = F.one_hot(query_idx).T.view(3, len(query_idx), 1, 1)
    probs = (probs.unsqueeze(0) * cls_index).max(1)[0]
    onehot = F.one_hot(probs.argmax(0), 3).float()
    area = onehot[:, :, 1:].sum((0, 1), keepdim=True)
    area = (area > 0.1 * area.sum()).float()
    probs[1:] *= area.transpose(0, -1)
    labels = probs.argmax(0)
    labels[probs.max(0)[0] < 0.15] = 0
    assert (torch.from_numpy(result.sem_seg) == labels).all()


def test_built_from_config_and_bad_settings(tiny_model_names):
    cfg = {"type": "ScClipBackbone", "model_name": tiny_model_names["vit_deep"],
           "templates": "photo", **TINY_IDX}  # fmt: skip
    model = BACKBONES.build(cfg)
    assert model.dense_mode == "scclip"
    assert model.encode_dense(_images(64, 64, batch=1)).shape[-2:] == (8, 8)
    assert model.encode_text(["cat", "dog"]).shape == (2, model.embed_dim)
    with pytest.raises(ConfigError, match="blocks before the last"):
        BACKBONES.build({**cfg, "pre_adjust_idx": 5})  # the six-block ViT has five before it
    with pytest.raises(ConfigError, match="multi_start_idx < multi_end_idx"):
        BACKBONES.build({**cfg, "multi_start_idx": 4, "multi_end_idx": 4})
    with pytest.raises(ConfigError, match="anomaly_detector"):
        BACKBONES.build({**cfg, "anomaly_detector": "sklearn"})
    with pytest.raises(ConfigError, match="contamination"):
        BACKBONES.build({**cfg, "contamination": 1.0})
    with pytest.raises(ConfigError, match="ViT"):
        BACKBONES.build({**cfg, "model_name": tiny_model_names["rn"]})
