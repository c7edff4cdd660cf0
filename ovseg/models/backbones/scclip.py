"""``ScClipBackbone``: SC-CLIP's self-calibrated dense tokens from a CLIP ViT alone.

SC-CLIP (Bai et al., 2024, arXiv:2411.15869; github.com/SuleBai/SC-CLIP ``clip/model.py``
``VisionTransformer.forward``, ``custom_attn``, ``adaptively_aggregate``,
``mean_interpolation`` and ``lof_pytorch``) keeps CLIP's blocks but the last as they are and
records the output ``F_i`` of every block ``i`` before the last (``i = 0 .. L-2``). With the
patch tokens ``P`` and the class token ``c`` of ``F_{L-2}`` (what the last block receives):

1. **Anomaly tokens.** A local outlier factor over ``P`` (30 neighbours, squared Euclidean
   distances, each point's reachability distance taken as its own 30th-neighbour distance, as
   the reference computes it) marks the tokens whose score is above the 95th percentile
   (``torch.quantile``, linear). Each marked token is replaced by the mean of its non-marked
   3 x 3 grid neighbours (kept if it has none).
2. **Self-adjusting with mid-level features.** ``S_mid`` are the cosine similarities of the
   patch tokens of ``F_pre`` (``pre_adjust_idx``; anomalies replaced the same way). The
   repaired ``P`` is aggregated with ``S_mid`` (entries below 0.4 set to 0, rows divided by
   their sum + 1e-6).
3. **Last block.** Attention ``(softmax(m) + softmax(k k^T / sqrt(d))) / 2`` per head, where
   ``m = 3 (S_mid - mean S_mid)`` with negative entries masked; applied to the values of
   ``ln_1(P)``, then ``out_proj``; no residual, no feed-forward; plus ``0.3 c`` (``res_cls``).
   The class token takes no part in the attention.
4. **Post-adjusting.** The result is aggregated again with ``S_post``, the cosine
   similarities of the patch tokens of ``F_post`` (``post_adjust_idx``; thresholded at 0.4).
5. **Multi-level fusion.** ``F_s + ... + F_{e-1}`` (``multi_start_idx``, ``multi_end_idx``)
   goes through the same attention with ``S_mid`` (plus ``res_cls`` times its class token),
   is aggregated with ``S_post`` and added.

``ln_post`` and the visual projection then give the joint-space patch tokens on CLIP's
``h x w`` grid. Block indices count from 0 over the blocks before the last; the reference's
ViT-B/16 setting is ``(8, 3, 3, 10, 0.3)``, ViT-L/14's ``(16, 6, 8, 19, 0.1)``.

Differences from the reference, on purpose:

* Windows are processed in batches; every statistic (outlier scores, their quantile, the mean
  of ``S_mid``) is taken per window, as the reference's one-window loop does.
* The reference converts token indices to grid positions with the number of grid *rows* as
  the row length, which is right only for square windows; here the true ``(row, column)`` is
  used. Every window of the presets is square (224 px crops on images whose short side is at
  least 336).
* A window with fewer than ``n_neighbors + 1`` patch tokens (the reference stops with an
  error) uses ``N - 1`` neighbours; a window without outliers (the reference stops with an
  error) keeps its tokens.
* ``anomaly_detector: norm`` is the detector of the repository's first version (the ten
  patch tokens of largest L2 norm), offered as an option; ``lof`` (the default) is the
  current one.
* The last block's layer scale (``ls_1``, the identity for every OpenAI / LAION CLIP) is
  applied to its attention output; the reference's CLIP has none.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.errors import ConfigError
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.models.backbones.dense_vit import vit_input_tokens
from ovseg.registry import BACKBONES

ANOMALY_DETECTORS = ("lof", "norm")


def lof_outliers(
    tokens: torch.Tensor, n_neighbors: int = 30, contamination: float = 0.05
) -> torch.Tensor:
    """SC-CLIP's local-outlier-factor test: tokens ``(B, N, C)`` -> outlier mask ``(B, N)``.

    Per window: squared Euclidean distances, the ``k`` nearest neighbours of every token
    (itself excluded), the reachability distance ``max(d(a, b), k-distance(a))`` with the
    querying token's own ``k``-distance (the reference's choice; the textbook LOF takes the
    neighbour's), local reachability densities ``k / mean(reach)``, and the factor ``mean over
    neighbours of lrd(b) / lrd(a)``. Tokens whose factor exceeds its ``1 - contamination``
    quantile are outliers. ``k = min(n_neighbors, N - 1)``. Computed in float32.
    """
    x = tokens.float()
    num = x.shape[1]
    k = min(int(n_neighbors), num - 1)
    if k < 1:
        return torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    # exact pairwise differences (no matrix-product shortcut), as the reference's norm of x_i - x_j
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    knn_dist, knn_idx = torch.topk(dist, k=k + 1, dim=-1, largest=False)
    knn_dist, knn_idx = knn_dist[..., 1:], knn_idx[..., 1:]
    k_dist = knn_dist[..., -1:].expand_as(knn_dist)
    reach = torch.maximum(knn_dist, k_dist)
    lrd = k / torch.nan_to_num(reach.mean(dim=-1), nan=1e-6)
    neighbour_lrd = torch.gather(lrd, 1, knn_idx.flatten(1)).view_as(knn_idx)
    scores = (neighbour_lrd / lrd.unsqueeze(-1)).mean(dim=-1)
    threshold = torch.quantile(scores, 1.0 - contamination, dim=-1, keepdim=True)
    return scores > threshold


def norm_outliers(tokens: torch.Tensor, count: int = 10) -> torch.Tensor:
    """The first SC-CLIP version's detector: the ``count`` tokens of largest L2 norm -> ``(B, N)``."""
    norms = tokens.float().norm(dim=-1)
    top = norms.topk(min(int(count), norms.shape[1]), dim=-1).indices
    return torch.zeros_like(norms, dtype=torch.bool).scatter_(1, top, True)


def fill_anomalies(feature_map: torch.Tensor, anomalies: torch.Tensor) -> torch.Tensor:
    """Replace marked grid positions by the mean of their unmarked 3 x 3 neighbours.

    ``feature_map`` ``(B, C, H, W)``, ``anomalies`` ``(B, H, W)`` bool. Neighbours outside the
    grid or marked themselves do not count; a marked position without any counting neighbour
    keeps its value. Returns a new ``(B, C, H, W)`` tensor.
    """
    batch, channels, height, width = feature_map.shape
    keep = (~anomalies).to(feature_map.dtype).unsqueeze(1)
    kernel = torch.ones(1, 1, 3, 3, dtype=feature_map.dtype, device=feature_map.device)
    kernel[..., 1, 1] = 0
    masked = F.pad(feature_map * keep, (1, 1, 1, 1))
    neighbour_sum = F.conv2d(masked.reshape(batch * channels, 1, height + 2, width + 2), kernel)
    neighbour_sum = neighbour_sum.reshape(batch, channels, height, width)
    count = F.conv2d(F.pad(keep, (1, 1, 1, 1)), kernel)
    update = anomalies.unsqueeze(1) & (count > 0)
    return torch.where(update, neighbour_sum / count.clamp(min=1), feature_map)


def cosine_similarities(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens ``(B, N, C)`` -> their pairwise cosine similarities ``(B, N, N)``."""
    unit = tokens / tokens.norm(dim=-1, keepdim=True)
    return unit @ unit.transpose(1, 2)


def aggregate(tokens: torch.Tensor, similarities: torch.Tensor, threshold: float) -> torch.Tensor:
    """SC-CLIP's ``adaptively_aggregate``: ``(B, N, C)`` tokens mixed by thresholded similarities.

    Entries of ``similarities`` ``(B, N, N)`` below ``threshold`` become 0; each row is divided
    by its sum plus 1e-6; returns ``rows @ tokens`` ``(B, N, C)``.
    """
    weights = similarities.masked_fill(similarities < threshold, 0.0)
    weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-6)
    return weights @ tokens


def calibrated_attention(
    attn: nn.MultiheadAttention, x: torch.Tensor, mid_similarities: torch.Tensor, gamma: float
) -> torch.Tensor:
    """SC-CLIP's ``custom_attn``: layer-normed patch tokens ``(B, N, C)`` -> ``(B, N, C)``.

    Per head, ``(softmax(m) + softmax(k k^T * head_dim ** -0.5)) / 2`` applied to the values,
    then ``out_proj``. ``m = gamma * (S - mean S)`` for ``S = mid_similarities`` ``(B, N, N)``,
    the mean over each window's ``N * N`` entries, negative entries masked (``-inf``); the same
    ``m`` for every head.
    """
    batch, length, width = x.shape
    heads = attn.num_heads
    head_dim = width // heads
    _, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    k, v = (t.reshape(batch, length, heads, head_dim).transpose(1, 2) for t in (k, v))
    mid = (mid_similarities - mid_similarities.mean(dim=(1, 2), keepdim=True)) * gamma
    mid = mid.masked_fill(mid < 0.0, float("-inf"))
    weights = F.softmax(mid, dim=-1).unsqueeze(1)
    weights = weights + F.softmax((k @ k.transpose(-2, -1)) * head_dim**-0.5, dim=-1)
    weights = weights / 2
    out = (weights.to(v.dtype) @ v).transpose(1, 2).reshape(batch, length, width)
    return attn.out_proj(out)


def check_scclip_indices(
    num_blocks: int, pre_adjust_idx: int, post_adjust_idx: int, multi_start: int, multi_end: int
) -> None:
    """Block indices count over the ``num_blocks - 1`` blocks before the last."""
    usable = num_blocks - 1
    ok = (
        0 <= pre_adjust_idx < usable
        and 0 <= post_adjust_idx < usable
        and 0 <= multi_start < multi_end <= usable
    )
    if not ok:
        raise ConfigError(
            f"SC-CLIP block indices (pre_adjust_idx={pre_adjust_idx}, post_adjust_idx="
            f"{post_adjust_idx}, multi_start_idx={multi_start}, multi_end_idx={multi_end}) do not "
            f"fit a ViT of {num_blocks} blocks: indices count the {usable} blocks before the last "
            f"(0 .. {usable - 1}) and need multi_start_idx < multi_end_idx <= {usable}."
        )


def scclip_dense_tokens(
    visual: nn.Module,
    images: torch.Tensor,
    *,
    pre_adjust_idx: int = 8,
    post_adjust_idx: int = 3,
    multi_start_idx: int = 3,
    multi_end_idx: int = 10,
    res_cls: float = 0.3,
    sim_threshold: float = 0.4,
    gamma: float = 3.0,
    anomaly_detector: str = "lof",
    n_neighbors: int = 30,
    contamination: float = 0.05,
    norm_anomalies: int = 10,
    return_global: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SC-CLIP's dense tokens of an open_clip ``VisionTransformer`` -> ``(B, D, h, w)``.

    ``images`` ``(B, 3, H, W)`` normalised for CLIP; ``h, w = H // p, W // p``. See the module
    docstring for the steps. With ``return_global`` also CLIP's own image embedding ``(B, D)``
    (the unmodified last block on the same tokens), as ``(global, dense)``.
    """
    if anomaly_detector not in ANOMALY_DETECTORS:
        raise ConfigError(
            f"anomaly_detector must be one of {', '.join(ANOMALY_DETECTORS)}, "
            f"not {anomaly_detector!r}."
        )
    blocks = visual.transformer.resblocks
    check_scclip_indices(len(blocks), pre_adjust_idx, post_adjust_idx, multi_start_idx,
                         multi_end_idx)  # fmt: skip
    x, (h, w) = vit_input_tokens(visual, images)
    outputs = []
    for block in blocks[:-1]:
        x = block(x)
        outputs.append(x)
    batch, width = x.shape[0], x.shape[-1]
    last = blocks[-1]

    def to_map(tokens: torch.Tensor) -> torch.Tensor:
        return tokens.transpose(1, 2).reshape(batch, width, h, w)

    def to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.reshape(batch, width, h * w).transpose(1, 2)

    cls, patches = x[:, :1], x[:, 1:]
    if anomaly_detector == "lof":
        anomalies = lof_outliers(patches, n_neighbors, contamination)
    else:
        anomalies = norm_outliers(patches, norm_anomalies)
    anomalies = anomalies.reshape(batch, h, w)
    patches = to_tokens(fill_anomalies(to_map(patches), anomalies))
    mid = to_tokens(fill_anomalies(to_map(outputs[pre_adjust_idx][:, 1:]), anomalies))
    mid_sim = cosine_similarities(mid)
    post_sim = cosine_similarities(outputs[post_adjust_idx][:, 1:])

    out = aggregate(patches, mid_sim, sim_threshold)
    out = last.ls_1(calibrated_attention(last.attn, last.ln_1(out), mid_sim, gamma))
    out = aggregate(out + res_cls * cls, post_sim, sim_threshold)

    fused = torch.zeros_like(outputs[0])
    for i in range(multi_start_idx, multi_end_idx):
        fused = fused + outputs[i]
    fused_out = last.ls_1(calibrated_attention(last.attn, last.ln_1(fused[:, 1:]), mid_sim, gamma))
    out = out + aggregate(fused_out + res_cls * fused[:, :1], post_sim, sim_threshold)

    out = visual.ln_post(out)
    if visual.proj is not None:
        out = out @ visual.proj
    dense = out.transpose(1, 2).reshape(batch, -1, h, w)
    if not return_global:
        return dense
    pooled = visual.ln_post(last(x))
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    pooled = (
        pooled[:, 1:].mean(dim=1) if getattr(visual, "pool_type", "tok") == "avg" else pooled[:, 0]
    )
    return pooled, dense


@BACKBONES.register()
class ScClipBackbone(ClipBackbone):
    """SC-CLIP: an open_clip ViT whose dense tokens are self-calibrated (no second model).

    The interface of :class:`ClipBackbone` (``encode_dense``, ``encode_text``, ``normalize``
    ...); ``encode_dense(images (B, 3, H, W)) -> (B, D, h, w)`` on CLIP's patch grid.

    Args:
        model_name, pretrained, checkpoint, templates, quick_gelu, precision, device,
            cache_dir: the CLIP model, as for :class:`ClipBackbone`.
        pre_adjust_idx, post_adjust_idx: the blocks whose similarities adjust the tokens
            before / after the last block (0-based over the blocks before the last).
        multi_start_idx, multi_end_idx: the blocks ``[start, end)`` summed for the fusion.
        res_cls: weight of the class token added to the last block's output.
        sim_threshold: similarities below it are dropped in the aggregations (0.4).
        gamma: scale of the centred mid-level similarities in the attention (3.0).
        anomaly_detector: ``lof`` (the reference's) or ``norm`` (its first version's).
        n_neighbors, contamination: the outlier factor's neighbours and outlier share.
        norm_anomalies: how many tokens ``norm`` marks.
    """

    dense_mode = "scclip"

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        checkpoint: str | None = None,
        pre_adjust_idx: int = 8,
        post_adjust_idx: int = 3,
        multi_start_idx: int = 3,
        multi_end_idx: int = 10,
        res_cls: float = 0.3,
        sim_threshold: float = 0.4,
        gamma: float = 3.0,
        anomaly_detector: str = "lof",
        n_neighbors: int = 30,
        contamination: float = 0.05,
        norm_anomalies: int = 10,
        templates: str | Sequence[str] = "imagenet80",
        quick_gelu: bool | None = None,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        cache_dir: str | None = None,
    ) -> None:
        if anomaly_detector not in ANOMALY_DETECTORS:
            raise ConfigError(
                f"anomaly_detector must be one of {', '.join(ANOMALY_DETECTORS)}, "
                f"not {anomaly_detector!r}."
            )
        if not 0.0 < contamination < 1.0:
            raise ConfigError(f"contamination must lie in (0, 1), not {contamination}.")
        super().__init__(
            model_name,
            pretrained=pretrained,
            checkpoint=checkpoint,
            dense_mode="vanilla",
            templates=templates,
            quick_gelu=quick_gelu,
            precision=precision,
            device=device,
            cache_dir=cache_dir,
        )
        self.dense_mode = "scclip"
        if not self.is_vit:
            raise ConfigError(f"SC-CLIP needs a CLIP ViT; {model_name} has a ResNet image tower.")
        check_scclip_indices(len(self.model.visual.transformer.resblocks), pre_adjust_idx,
                             post_adjust_idx, multi_start_idx, multi_end_idx)  # fmt: skip
        self.settings = {
            "pre_adjust_idx": int(pre_adjust_idx),
            "post_adjust_idx": int(post_adjust_idx),
            "multi_start_idx": int(multi_start_idx),
            "multi_end_idx": int(multi_end_idx),
            "res_cls": float(res_cls),
            "sim_threshold": float(sim_threshold),
            "gamma": float(gamma),
            "anomaly_detector": anomaly_detector,
            "n_neighbors": int(n_neighbors),
            "contamination": float(contamination),
            "norm_anomalies": int(norm_anomalies),
        }

    @torch.inference_mode()
    def encode_dense_and_global(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP-normalised images ``(B, 3, H, W)`` -> ``(global (B, D), dense (B, D, h, w))``.

        ``global`` is CLIP's own image embedding; ``dense`` SC-CLIP's tokens; float32.
        """
        images = images.to(device=self.device, dtype=self.dtype)
        pooled, dense = scclip_dense_tokens(
            self.model.visual, images, return_global=True, **self.settings
        )
        return pooled.float(), dense.float()

    @torch.inference_mode()
    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised images ``(B, 3, H, W)`` -> SC-CLIP tokens ``(B, D, h, w)``, float32."""
        images = images.to(device=self.device, dtype=self.dtype)
        return scclip_dense_tokens(self.model.visual, images, **self.settings).float()
