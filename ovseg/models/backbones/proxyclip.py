"""``ProxyClipBackbone``: CLIP's last block attending with a proxy model's feature similarities.

ProxyCLIP (Lan et al., ECCV 2024; github.com/mc-lan/ProxyCLIP, ``open_clip/transformer.py``
``VisionTransformer.custom_attn`` and ``proxyclip_segmentor.py``) keeps every CLIP block but the
last. For the last block, with ``f`` the proxy model's patch features ``(C, M)`` on its own
``gh x gw = M`` grid (:mod:`ovseg.models.backbones.proxy_vfm`):

1. ``S = f_n^T f_n`` with ``f_n`` L2-normalised over channels: cosine similarities ``(M, M)``;
2. ``A = softmax((S - beta * mean(S)) * gamma)`` row-wise, where entries below zero after the
   shift and scale are masked out (``-inf``); ``beta`` 1.2 and ``gamma`` 3.0 by default;
3. CLIP's last-block value embeddings of the patch tokens (``ln_1`` then the value part of
   ``in_proj``), on CLIP's ``h x w`` grid, are resized bilinearly (``align_corners=False``) to
   the proxy grid ``gh x gw``;
4. ``out_proj(A v)`` for every head with the same ``A``; no residual, no feed-forward network
   (the reference returns the attention output as the block output), then ``ln_post`` and the
   visual projection.

So the dense tokens lie on the proxy grid: a 336 px window gives 42 x 42 tokens with DINO ViT-B/8,
24 x 24 with DINOv2 ViT-B/14, 21 x 21 with MAE ViT-B/16 at 336 and 64 x 64 with SAM. The
pipeline upsamples the cosine scores to the window bilinearly, as the reference does.

Differences from the reference, on purpose:

* A window whose proxy features are nearly all alike (``mean(S) > 1 / beta``) gives NaN
  tokens in the reference; here the fully masked rows keep their diagonal (see
  :func:`proxy_attention_weights`). Every other window is unaffected.
* ``mean(S)`` is taken per window; the reference takes the mean over the whole batch it is
  given, which is always one window in its sliding loop, so the results agree.
* Non-square windows use their true grid; the reference reads CLIP's grid as ``(W/p, H/p)`` and
  the DINO grid as ``(H/p, H/p)``, which only works for square windows (all windows of its
  configs are square: short side >= crop).
* The reference pads windows whose sides are not multiples of 56 (centred, zeros); here such
  windows go in unpadded and the patch convolutions drop the remainder. No window of the
  presets needs padding (crops 224 / 336 = 4 / 6 x 56 on images whose short side is >= crop).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.errors import ConfigError
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.models.backbones.dense_vit import vit_tokens_before_last_block
from ovseg.models.backbones.proxy_vfm import ProxyVisionModel
from ovseg.registry import BACKBONES


def proxy_attention_weights(features: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """ProxyCLIP's attention from proxy features ``(B, C, gh, gw)`` -> ``(B, M, M)``, ``M = gh*gw``.

    Rows sum to 1. ``(S - beta * mean(S)) * gamma`` with ``S`` the cosine similarities of the
    ``M`` positions and ``mean`` over all ``M * M`` entries of each window; negative entries
    are masked before the softmax. A row whose entries are all negative (possible only when
    ``mean(S) > 1 / beta``, since the diagonal is 1: nearly uniform features) would be NaN in
    the reference; here it keeps its diagonal entry, so that position attends to itself.
    Computed in float32.
    """
    f = F.normalize(features.flatten(2).float(), dim=1)
    sim = torch.einsum("bcm,bcn->bmn", f, f)
    logits = (sim - sim.mean(dim=(1, 2), keepdim=True) * beta) * gamma
    masked = logits < 0.0
    # a row with every entry masked is NaN in the reference; keep its diagonal entry instead
    # (the position attends to itself). Rows with any entry left are unchanged.
    empty = masked.all(dim=-1, keepdim=True)
    diagonal = torch.eye(masked.shape[-1], dtype=torch.bool, device=masked.device)
    masked &= ~(empty & diagonal)
    return logits.masked_fill(masked, float("-inf")).softmax(dim=-1)


def clip_proxy_tokens(
    visual: nn.Module, images: torch.Tensor, attn: torch.Tensor, grid_hw: tuple[int, int]
) -> torch.Tensor:
    """CLIP tokens with ProxyCLIP's last block -> ``(B, D, gh, gw)`` in the joint space.

    ``visual`` an open_clip ``VisionTransformer``; ``images`` ``(B, 3, H, W)`` normalised for
    CLIP; ``attn`` ``(B, gh*gw, gh*gw)`` from :func:`proxy_attention_weights`; ``grid_hw`` the
    proxy grid ``(gh, gw)``.
    """
    x, (h, w) = vit_tokens_before_last_block(visual, images)
    last = visual.transformer.resblocks[-1]
    block_attn = last.attn
    width = x.shape[-1]
    value = F.linear(
        last.ln_1(x),
        block_attn.in_proj_weight[2 * width :],
        None if block_attn.in_proj_bias is None else block_attn.in_proj_bias[2 * width :],
    )
    batch = value.shape[0]
    value = value[:, 1:].reshape(batch, h, w, width).permute(0, 3, 1, 2)
    # bilinear resizing acts on each channel alone, so resizing all heads at once is the same
    value = F.interpolate(value, size=grid_hw, mode="bilinear", align_corners=False)
    value = value.flatten(2).transpose(1, 2)
    # one attention map for every head: A @ v per head equals A @ v over all channels
    out = block_attn.out_proj(torch.bmm(attn.to(value.dtype), value))
    out = visual.ln_post(out)
    if visual.proj is not None:
        out = out @ visual.proj
    return out.transpose(1, 2).reshape(batch, -1, *grid_hw)


@BACKBONES.register()
class ProxyClipBackbone(nn.Module):
    """ProxyCLIP: an open_clip ViT whose last block attends with a proxy model's similarities.

    Same interface as :class:`ClipBackbone` for the semantic pipeline: ``encode_dense(images
    (B, 3, H, W) normalised with :attr:`mean` / :attr:`std`) -> (B, D, gh, gw)`` on the proxy
    model's grid, ``encode_text``, ``normalize``, ``device``. The proxy model sees the same
    window with its own (ImageNet) normalisation.

    Args:
        model_name, pretrained, checkpoint, templates, quick_gelu, precision, device,
            cache_dir: the CLIP model, as for :class:`ClipBackbone`.
        proxy_model: a name of :data:`ovseg.models.backbones.proxy_vfm.PROXY_MODELS`
            (``dino_vitb8``, ``dinov2_vitb14_reg``, ``mae_vitb16``, ``sam_vitb`` ...).
        proxy_checkpoint: the proxy's official weight file.
        proxy_arch, proxy_kwargs: override the proxy architecture (tiny test models).
        proxy_image_size: MAE's square input side (the reference's ``slide_crop``).
        random_proxy: allow a randomly initialised proxy (tests, speed measurements).
        beta, gamma: the shift and scale of the similarities (1.2 and 3.0 in the reference).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        checkpoint: str | None = None,
        proxy_model: str = "dino_vitb8",
        proxy_checkpoint: str | os.PathLike | None = None,
        proxy_arch: str | None = None,
        proxy_kwargs: Mapping[str, Any] | None = None,
        proxy_image_size: int | None = None,
        random_proxy: bool = False,
        beta: float = 1.2,
        gamma: float = 3.0,
        templates: str | Sequence[str] = "imagenet80",
        quick_gelu: bool | None = None,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.proxy = ProxyVisionModel(
            proxy_model,
            proxy_checkpoint,
            arch=proxy_arch,
            timm_kwargs=proxy_kwargs,
            image_size=proxy_image_size,
            random_init=random_proxy,
        )
        self.clip = ClipBackbone(
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
        if not self.clip.is_vit:
            raise ConfigError(f"ProxyCLIP needs a CLIP ViT; {model_name} has a ResNet image tower.")
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.proxy.to(device=self.clip.device, dtype=self.clip.dtype)

    # ------------------------------------------------------------------ the ClipBackbone face
    @property
    def device(self) -> torch.device:
        return self.clip.device

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.dtype

    @property
    def mean(self) -> torch.Tensor:
        return self.clip.mean

    @property
    def std(self) -> torch.Tensor:
        return self.clip.std

    @property
    def model(self) -> nn.Module:
        """The open_clip model (text tower and CLIP image tower)."""
        return self.clip.model

    @property
    def model_name(self) -> str:
        return self.clip.model_name

    @property
    def tokenizer(self):
        return self.clip.tokenizer

    @property
    def templates(self):
        return self.clip.templates

    @property
    def embed_dim(self) -> int:
        return self.clip.embed_dim

    @property
    def logit_scale(self) -> float:
        return self.clip.logit_scale

    @property
    def image_size(self) -> int:
        return self.clip.image_size

    @property
    def patch_size(self) -> int:
        return self.clip.patch_size

    is_vit = True
    dense_mode = "proxyclip"

    def set_precision(self, precision: str) -> None:
        """Cast CLIP and the proxy model to ``fp32``, ``bf16`` or ``fp16``."""
        self.clip.set_precision(precision)
        self.proxy.to(dtype=self.clip.dtype)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> normalised for CLIP."""
        return self.clip.normalize(images)

    def encode_text(self, names: Sequence[str]) -> torch.Tensor:
        return self.clip.encode_text(names)

    def clear_text_cache(self) -> None:
        self.clip.clear_text_cache()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP's own global embeddings ``(B, D)`` (the proxy plays no part)."""
        return self.clip.encode_image(images)

    # ------------------------------------------------------------------ dense tokens
    def proxy_features(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised windows ``(B, 3, H, W)`` -> proxy features ``(B, C, gh, gw)``."""
        rgb = images.float() * self.clip.std + self.clip.mean
        proxy_in = (rgb - self.proxy.mean) / self.proxy.std
        return self.proxy(proxy_in.to(self.clip.dtype))

    @torch.inference_mode()
    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised windows ``(B, 3, H, W)`` -> joint-space tokens ``(B, D, gh, gw)``.

        ``gh, gw`` is the proxy model's grid (:meth:`ProxyVisionModel.grid_size`); float32.
        """
        images = images.to(device=self.device, dtype=self.dtype)
        features = self.proxy_features(images)
        attn = proxy_attention_weights(features, self.beta, self.gamma)
        grid = tuple(features.shape[-2:])
        return clip_proxy_tokens(self.clip.model.visual, images, attn, grid).float()
