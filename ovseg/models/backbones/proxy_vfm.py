"""Proxy vision models for ProxyCLIP: DINO, DINOv2 (with or without registers), MAE, SAM.

ProxyCLIP (Lan et al., ECCV 2024; github.com/mc-lan/ProxyCLIP ``proxyclip_segmentor.py``) takes
the patch features of a vision foundation model and turns their cosine similarities into the
attention of CLIP's last block. This module builds those models and returns their features
exactly as the reference reads them:

=========  ===============================================  ===================================
family     features (reference call)                        image the model sees
=========  ===============================================  ===================================
dino       last block, final LayerNorm, patch tokens        the window as it is
           (``get_intermediate_layers(x)[0][:, 1:]``)
dinov2     last block, final LayerNorm, patch tokens        the window as it is
           (``get_intermediate_layers(x, reshape=True)``)
mae        final LayerNorm of the patch tokens              resized to a square (the crop size)
           (``forward_features``)
sam        image encoder output (neck), 256 channels        resized to 1024 x 1024
=========  ===============================================  ===================================

Every model gets the window normalised with the ImageNet mean/std. DINO, DINOv2 and MAE are
timm ``VisionTransformer`` definitions run by :func:`vit_patch_features`, which resizes the
positional embedding the way each official implementation does (see :func:`resample_patch_pos`).
SAM's encoder comes from ``segment_anything`` through :func:`ovseg.models.decoders.sam_build.build_sam`.

Weights are read from local files only, in the official layouts (torch.hub DINO
``dino_vitbase8_pretrain.pth``, DINOv2 ``dinov2_vitb14_reg4_pretrain.pth``, MAE
``mae_pretrain_vit_base.pth``, SAM ``sam_vit_b_01ec64.pth``), through :mod:`ovseg.weights`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.errors import CheckpointError, ConfigError, MissingDependencyError, WeightsNotFoundError
from ovseg.weights import load_state_dict

LOGGER = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POS_RESAMPLE_MODES = ("offset", "size", "size_antialias")
_DINO = "https://dl.fbaipublicfiles.com/dino"
_DINOV2 = "https://dl.fbaipublicfiles.com/dinov2"
_MAE = "https://dl.fbaipublicfiles.com/mae/pretrain"
_SAM = "https://dl.fbaipublicfiles.com/segment_anything"


@dataclass(frozen=True)
class ProxySpec:
    """One proxy model: its family, architecture, official weight file and position rule.

    ``arch`` is a timm model name (dino / dinov2 / mae) or a SAM model type; ``timm_kwargs``
    are passed to ``timm.create_model`` (the image size the positional embedding was trained
    at); ``pos_resample`` is how that embedding is resized to other grids.
    """

    family: str
    arch: str
    file: str
    url: str
    pos_resample: str = "offset"
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)


def _dino(arch: str, file: str) -> ProxySpec:
    stem = file.removesuffix(".pth")
    return ProxySpec("dino", arch, file, f"{_DINO}/{stem}/{file}", "offset", {"img_size": 224})


def _dinov2(size: str, arch: str, registers: bool) -> ProxySpec:
    file = f"dinov2_vit{size}14{'_reg4' if registers else ''}_pretrain.pth"
    # torch.hub's dinov2_*_reg models resize positions by output size with antialiasing; the
    # others by scale factor (grid + 0.1) / 37 without (dinov2/hub/backbones.py)
    mode = "size_antialias" if registers else "offset"
    return ProxySpec("dinov2", arch, file, f"{_DINOV2}/dinov2_vit{size}14/{file}", mode,
                     {"img_size": 518})  # fmt: skip


#: Proxy models by name. ProxyCLIP's segmentor loads ``dino_vitb8`` for ``vfm_model='dino'``
#: and ``dinov2_vitb14_reg`` for ``'dinov2'``; the others are its commented alternatives.
PROXY_MODELS: dict[str, ProxySpec] = {
    "dino_vits16": _dino("vit_small_patch16_224", "dino_deitsmall16_pretrain.pth"),
    "dino_vits8": _dino("vit_small_patch8_224", "dino_deitsmall8_pretrain.pth"),
    "dino_vitb16": _dino("vit_base_patch16_224", "dino_vitbase16_pretrain.pth"),
    "dino_vitb8": _dino("vit_base_patch8_224", "dino_vitbase8_pretrain.pth"),
    "dinov2_vits14": _dinov2("s", "vit_small_patch14_dinov2", False),
    "dinov2_vitb14": _dinov2("b", "vit_base_patch14_dinov2", False),
    "dinov2_vitl14": _dinov2("l", "vit_large_patch14_dinov2", False),
    "dinov2_vits14_reg": _dinov2("s", "vit_small_patch14_reg4_dinov2", True),
    "dinov2_vitb14_reg": _dinov2("b", "vit_base_patch14_reg4_dinov2", True),
    "dinov2_vitl14_reg": _dinov2("l", "vit_large_patch14_reg4_dinov2", True),
    # MAE's checkpoint positions are resized once by output size (mae/pos_embed.py)
    "mae_vitb16": ProxySpec("mae", "vit_base_patch16_224", "mae_pretrain_vit_base.pth",
                            f"{_MAE}/mae_pretrain_vit_base.pth", "size", {"img_size": 224}),
    "mae_vitl16": ProxySpec("mae", "vit_large_patch16_224", "mae_pretrain_vit_large.pth",
                            f"{_MAE}/mae_pretrain_vit_large.pth", "size", {"img_size": 224}),
    "mae_vith14": ProxySpec("mae", "vit_huge_patch14_224", "mae_pretrain_vit_huge.pth",
                            f"{_MAE}/mae_pretrain_vit_huge.pth", "size", {"img_size": 224}),
    "sam_vitb": ProxySpec("sam", "vit_b", "sam_vit_b_01ec64.pth", f"{_SAM}/sam_vit_b_01ec64.pth"),
    "sam_vitl": ProxySpec("sam", "vit_l", "sam_vit_l_0b3195.pth", f"{_SAM}/sam_vit_l_0b3195.pth"),
    "sam_vith": ProxySpec("sam", "vit_h", "sam_vit_h_4b8939.pth", f"{_SAM}/sam_vit_h_4b8939.pth"),
}  # fmt: skip


def resolve_proxy_spec(name: str) -> ProxySpec:
    if name not in PROXY_MODELS:
        raise ConfigError(
            f"Unknown proxy_model {name!r}; choose one of {', '.join(sorted(PROXY_MODELS))}."
        )
    return PROXY_MODELS[name]


def resample_patch_pos(
    patch_pos: torch.Tensor, grid_hw: tuple[int, int], mode: str
) -> torch.Tensor:
    """Resize patch positional embeddings ``(M*M, C)`` to an ``(h, w)`` grid -> ``(h*w, C)``.

    ``mode`` follows the official implementations (all bicubic, ``align_corners=False``, in
    float32): ``offset`` (DINO, DINOv2 without registers) samples with the scale factor
    ``((h + 0.1) / M, (w + 0.1) / M)``; ``size`` (MAE) asks for the output size;
    ``size_antialias`` (DINOv2 with registers) asks for the size with antialiasing. Unchanged
    when the grid already matches.
    """
    if mode not in POS_RESAMPLE_MODES:
        raise ConfigError(f"pos_resample must be one of {', '.join(POS_RESAMPLE_MODES)}.")
    num, dim = patch_pos.shape
    side = int(round(math.sqrt(num)))
    if side * side != num:
        raise ConfigError(f"Positional embedding of {num} patches is not a square grid.")
    h, w = grid_hw
    if (side, side) == (h, w):
        return patch_pos
    grid = patch_pos.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    if mode == "offset":
        scale = ((h + 0.1) / side, (w + 0.1) / side)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
    else:
        grid = F.interpolate(
            grid, size=(h, w), mode="bicubic", align_corners=False,
            antialias=mode == "size_antialias",
        )  # fmt: skip
    if grid.shape[-2:] != (h, w):
        raise AssertionError(f"resampled grid {tuple(grid.shape[-2:])} != {(h, w)}")
    return grid.permute(0, 2, 3, 1).reshape(h * w, dim).to(patch_pos.dtype)


def vit_patch_features(model: nn.Module, images: torch.Tensor, pos_resample: str) -> torch.Tensor:
    """Final-LayerNorm patch tokens of a timm ``VisionTransformer`` -> ``(B, C, h, w)``.

    ``images`` ``(B, 3, H, W)``; ``h, w = H // p, W // p`` (the patch convolution drops the
    remainder). The class token (and the register tokens of DINOv2-reg, inserted after the
    positional embedding is added, as DINOv2 does) go through the blocks and are dropped after
    the final norm. Models with ``no_embed_class`` hold the class position inside ``cls_token``
    (see :func:`convert_official_state_dict`).
    """
    x = model.patch_embed.proj(images)
    batch, dim, h, w = x.shape
    x = model.patch_embed.norm(x.flatten(2).transpose(1, 2))
    pos = model.pos_embed[0]
    cls = model.cls_token.expand(batch, -1, -1)
    if model.no_embed_class:
        x = x + resample_patch_pos(pos, (h, w), pos_resample).to(x.dtype)
    else:
        patch_pos = resample_patch_pos(pos[1:], (h, w), pos_resample).to(x.dtype)
        cls = cls + pos[:1].to(x.dtype)
        x = x + patch_pos
    prefix = [cls]
    if getattr(model, "reg_token", None) is not None:
        prefix.append(model.reg_token.expand(batch, -1, -1))
    x = torch.cat([*prefix, x], dim=1)
    x = model.norm_pre(x)
    for block in model.blocks:
        x = block(x)
    x = model.norm(x)[:, model.num_prefix_tokens :]
    return x.transpose(1, 2).reshape(batch, dim, h, w)


def convert_official_state_dict(
    state: Mapping[str, torch.Tensor], family: str, model: nn.Module
) -> dict[str, torch.Tensor]:
    """Official DINO / DINOv2 / MAE keys -> the timm ``VisionTransformer`` module names.

    DINO keys are timm's already. DINOv2 drops ``mask_token``; with registers, timm's layout has
    ``reg_token`` and keeps the class position inside ``cls_token`` (``cls_token + pos[:, 0]``,
    ``pos_embed[:, 1:]``), as timm's own converter does. MAE pretraining files may carry the
    decoder and ``mask_token``: the reference loads with ``strict=False`` and so ignores them.
    """
    out = dict(state)
    if family == "dinov2":
        out.pop("mask_token", None)
        if "register_tokens" in out:
            out["reg_token"] = out.pop("register_tokens")
        if getattr(model, "no_embed_class", False) and "pos_embed" in out and "cls_token" in out:
            pos = out.pop("pos_embed")
            out["cls_token"] = out["cls_token"] + pos[:, :1]
            out["pos_embed"] = pos[:, 1:]
    elif family == "mae":
        out = {
            k: v
            for k, v in out.items()
            if not k.startswith(("decoder", "mask_token", "head.", "fc_norm."))
        }
    return out


def _missing_weights(spec: ProxySpec, name: str, path: str | os.PathLike | None) -> Exception:
    where = f"'{path}' does not exist" if path is not None else "no proxy_checkpoint was given"
    return WeightsNotFoundError(
        f"Proxy model {name}: {where}. Its official weights are {spec.file} from {spec.url}; "
        "download that file and pass its path as pipeline.backbone.proxy_checkpoint=PATH "
        "(or random_proxy=true for random weights, for tests and speed measurements only)."
    )


def _build_timm(spec: ProxySpec, overrides: Mapping[str, Any] | None) -> nn.Module:
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - timm ships with the proxyclip extra
        raise MissingDependencyError(
            "ProxyCLIP's DINO / DINOv2 / MAE proxies need timm: pip install 'ovseg[proxyclip]'."
        ) from exc
    kwargs = {**spec.timm_kwargs, **dict(overrides or {}), "num_classes": 0}
    try:
        return timm.create_model(spec.arch, pretrained=False, **kwargs)
    except (TypeError, RuntimeError) as exc:
        raise ConfigError(f"timm cannot build {spec.arch} with {kwargs}: {exc}") from exc


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Any) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"Proxy checkpoint '{path}' does not fit this architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shapes differ for {wrong[:5]}. Check that "
            "proxy_model names the model the file was saved from."
        )
    model.load_state_dict(state, strict=True)


class ProxyVisionModel(nn.Module):
    """A proxy model and its input rule: ``forward(images) -> features (B, C, gh, gw)``.

    Args:
        name: a key of :data:`PROXY_MODELS`.
        checkpoint: the official weight file (required unless ``random_init``).
        arch: overrides the timm name / SAM model type of the spec (e.g. a tiny test model).
        timm_kwargs: extra ``timm.create_model`` arguments (e.g. ``embed_dim``, ``depth``).
        image_size: MAE only: the square side the window is resized to (the reference's
            ``slide_crop``); ``None`` takes the window's longer side.
        random_init: allow random weights (tests, speed measurements).

    ``images`` are RGB normalised with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`.
    """

    def __init__(
        self,
        name: str,
        checkpoint: str | os.PathLike | None = None,
        *,
        arch: str | Mapping[str, Any] | None = None,
        timm_kwargs: Mapping[str, Any] | None = None,
        image_size: int | None = None,
        random_init: bool = False,
    ) -> None:
        super().__init__()
        spec = resolve_proxy_spec(name)
        if arch is not None:
            spec = ProxySpec(spec.family, arch, spec.file, spec.url, spec.pos_resample,
                             spec.timm_kwargs)  # fmt: skip
        self.name = name
        self.spec = spec
        self.family = spec.family
        self.image_size = int(image_size) if image_size is not None else None
        path = Path(checkpoint).expanduser() if checkpoint is not None else None
        if path is None and not random_init or path is not None and not path.exists():
            raise _missing_weights(spec, name, checkpoint)
        if self.family == "sam":
            from ovseg.models.decoders.sam_build import build_sam

            self.model = build_sam(spec.arch, path).image_encoder
            self.patch_size = int(self.model.patch_embed.proj.kernel_size[0])
            self.sam_input = int(self.model.img_size)
        else:
            self.model = _build_timm(spec, timm_kwargs)
            if path is not None:
                state = convert_official_state_dict(load_state_dict(path), spec.family, self.model)
                _load_strict(self.model, state, path)
            patch = self.model.patch_embed.proj.kernel_size
            self.patch_size = int(patch[0])
        if path is None:
            LOGGER.warning(
                "Proxy model %s has random weights; its attention is meaningless except for "
                "tests and speed measurements.", name,
            )  # fmt: skip
        self.model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(H, W)`` the model sees for a window of ``height`` x ``width`` pixels."""
        if self.family == "sam":
            return self.sam_input, self.sam_input
        if self.family == "mae":
            side = self.image_size or max(height, width)
            return side, side
        return height, width

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """The feature grid ``(gh, gw)`` for a window of ``height`` x ``width`` pixels."""
        h, w = self.input_size(height, width)
        return h // self.patch_size, w // self.patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised windows ``(B, 3, H, W)`` -> features ``(B, C, gh, gw)``."""
        size = self.input_size(*images.shape[-2:])
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        if self.family == "sam":
            return self.model(images)
        return vit_patch_features(self.model, images, self.spec.pos_resample)
