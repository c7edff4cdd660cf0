"""``ClipBackbone``: an open_clip model giving dense patch tokens and prompt-ensembled text.

The image side returns tokens in CLIP's joint space, not normalised:
``encode_dense(images (B, 3, H, W)) -> (B, D, h, w)`` where ``images`` are RGB, scaled to [0, 1]
and normalised with :attr:`ClipBackbone.mean` / :attr:`ClipBackbone.std` (see
:meth:`ClipBackbone.normalize`). ``h, w`` is the patch grid (``H // patch``) for ViTs and
``H // 32`` for ResNets. The text side returns L2-normalised class embeddings ``(N, D)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
from torch import nn

from ovseg.errors import ConfigError, VocabularyError, WeightsNotFoundError
from ovseg.model_zoo.embedded import embedded_checkpoint
from ovseg.models.backbones.clip_weights import (
    find_weights_in_folder,
    load_clip_state_dict,
    read_folder_config,
    resolve_pretrained_tag,
)
from ovseg.models.backbones.dense_resnet import resnet_dense_tokens
from ovseg.models.backbones.dense_vit import check_dense_mode, vit_dense_tokens
from ovseg.models.backbones.templates import resolve_templates
from ovseg.models.precision import dtype_for
from ovseg.registry import BACKBONES

LOGGER = logging.getLogger(__name__)
MODEL_CONFIG_DIR = Path(__file__).resolve().parents[2] / "model_zoo" / "model_configs"
_TEXT_BATCH = 1024  # prompts per text-encoder call


def _dtype_for(precision: str) -> torch.dtype:
    return dtype_for(precision)


class _QuietRandomInit(logging.Filter):
    """Drops open_clip's "initialized randomly" warning: ovseg loads the weights right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning():
    root = logging.getLogger()
    quiet = _QuietRandomInit()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def register_packaged_model_configs() -> None:
    """Make the architectures shipped in ``ovseg/model_zoo/model_configs`` known to open_clip."""
    if MODEL_CONFIG_DIR.is_dir() and any(MODEL_CONFIG_DIR.glob("*.json")):
        known = set(open_clip.list_models())
        if not all(p.stem in known for p in MODEL_CONFIG_DIR.glob("*.json")):
            open_clip.add_model_config(MODEL_CONFIG_DIR)


def build_open_clip_model(
    model_name: str,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    *,
    quick_gelu: bool | None = None,
    cache_dir: str | None = None,
) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    """Build an open_clip model uninitialised and load its weights safely.

    ``checkpoint`` may be a weight file (safetensors / torch zip / legacy; open_clip or OpenAI
    keys) or an hf-hub style folder holding ``open_clip_config.json`` (then ``model_name`` is
    taken from the folder). ``pretrained`` is an open_clip tag such as ``openai``. With neither,
    the model stays randomly initialised. Returns ``(model in eval mode, mean, std)``.
    """
    register_packaged_model_configs()
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and not ckpt.exists():
        raise WeightsNotFoundError(
            f"Checkpoint {ckpt} does not exist. Give the path of an open_clip weight file "
            "(.safetensors / .bin / .pt) or of a folder holding open_clip_config.json."
        )
    if ckpt is not None and ckpt.is_dir():
        folder_cfg = read_folder_config(ckpt)
        with _quiet_random_init_warning():
            model = open_clip.create_model(f"local-dir:{ckpt}", load_weights=False)
        pp = folder_cfg.get("preprocess_cfg", {})
        mean = tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
        std = tuple(pp.get("std", open_clip.OPENAI_DATASET_STD))
        load_clip_state_dict(model, find_weights_in_folder(ckpt))
        return model.eval(), mean, std

    if model_name not in open_clip.list_models():
        raise ConfigError(
            f"open_clip has no architecture {model_name!r}. Known names include "
            f"{', '.join(open_clip.list_models()[:8])} ...; register a JSON config with "
            "open_clip.add_model_config(PATH) first for custom ones."
        )
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    if ckpt is None and pretrained:  # find the file before paying for building the model
        ckpt = embedded_checkpoint(model_name, pretrained) or resolve_pretrained_tag(
            model_name, pretrained, cache_dir
        )
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    with _quiet_random_init_warning():
        model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
    mean = tuple(tag_cfg.get("mean", model.visual.preprocess_cfg["mean"]))
    std = tuple(tag_cfg.get("std", model.visual.preprocess_cfg["std"]))
    if ckpt is not None:
        load_clip_state_dict(model, ckpt)
    else:
        LOGGER.warning(
            "%s has random weights (no pretrained tag or checkpoint given); its outputs are "
            "meaningless except for tests and speed measurements.",
            model_name,
        )
    return model.eval(), mean, std


@BACKBONES.register()
class ClipBackbone(nn.Module):
    """open_clip model with training-free dense modes and a cached, prompt-ensembled text encoder.

    Args:
        model_name: open_clip architecture (``ViT-B-16``, ``RN50``, or one registered at run time).
        pretrained: open_clip weight tag (``openai``, ``laion2b_s34b_b88k`` ...).
        checkpoint: a local weight file or hf-hub style folder (overrides ``pretrained``'s file).
        dense_mode: last-block variant for ViTs (see :mod:`ovseg.models.backbones.dense_vit`).
        templates: ``imagenet80`` (CLIP's 80 templates), ``photo``, ``none`` or template strings.
        naclip_std: standard deviation (in patches) of NACLIP's neighbourhood Gaussian.
        keep_residual, keep_ffn: override whether the modified last block keeps its residual
            connection / feed-forward network (``None``: the mode's published choice).
        precision: ``fp32``, ``bf16`` or ``fp16`` weights and activations.
        device: where the model runs.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        checkpoint: str | None = None,
        dense_mode: str = "vanilla",
        templates: str | Sequence[str] = "imagenet80",
        naclip_std: float = 5.0,
        keep_residual: bool | None = None,
        keep_ffn: bool | None = None,
        quick_gelu: bool | None = None,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.dtype = _dtype_for(precision)  # checked before the (possibly slow) model build
        self.model_name = model_name
        self.dense_mode = check_dense_mode(dense_mode)
        self.naclip_std = float(naclip_std)
        self.keep_residual = keep_residual
        self.keep_ffn = keep_ffn
        self.templates = resolve_templates(templates)
        model, mean, std = build_open_clip_model(
            model_name, pretrained, checkpoint, quick_gelu=quick_gelu, cache_dir=cache_dir
        )
        self.model = model.to(device=device, dtype=self.dtype).eval()
        self.model.requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(
            model_name
            if checkpoint is None or not Path(checkpoint).is_dir()
            else f"local-dir:{checkpoint}"
        )
        # on the model's device: ``device`` below reads it, and inputs follow it
        self.register_buffer(
            "mean", torch.tensor(mean, device=device).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, device=device).view(1, 3, 1, 1), persistent=False
        )
        self._text_cache: dict[str, torch.Tensor] = {}
        visual = self.model.visual
        self.is_vit = hasattr(visual, "transformer")
        if self.is_vit:
            patch = visual.patch_size
            self.patch_size = int(patch[0] if isinstance(patch, tuple) else patch)
        elif hasattr(visual, "attnpool"):
            self.patch_size = 32
        else:
            raise ConfigError(
                f"{model_name} has a {type(visual).__name__} image tower; dense features need a "
                "CLIP ViT or ModifiedResNet."
            )
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple) else size)

    def set_precision(self, precision: str) -> None:
        """Cast the model to ``fp32``, ``bf16`` or ``fp16`` (inputs follow; outputs stay float32)."""
        self.dtype = _dtype_for(precision)
        self.model.to(dtype=self.dtype)
        self._text_cache.clear()

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def embed_dim(self) -> int:
        return (
            int(self.model.text_projection.shape[1])
            if isinstance(self.model.text_projection, torch.Tensor)
            else int(self.model.visual.output_dim)
        )

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature ``exp(logit_scale)`` (100 for OpenAI weights)."""
        return float(self.model.logit_scale.detach().exp())

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> normalised with the model's mean/std."""
        return (images - self.mean) / self.std

    @torch.inference_mode()
    def encode_dense_and_global(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images ``(B, 3, H, W)`` -> ``(global (B, D), dense (B, D, h, w))``, float32."""
        images = images.to(device=self.device, dtype=self.dtype)
        if self.is_vit:
            global_embed, dense = vit_dense_tokens(
                self.model.visual,
                images,
                self.dense_mode,
                self.naclip_std,
                self.keep_residual,
                self.keep_ffn,
                fused=True,
            )
        else:
            global_embed, dense = resnet_dense_tokens(self.model.visual, images)
        return global_embed.float(), dense.float()

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images ``(B, 3, H, W)`` -> dense joint-space tokens ``(B, D, h, w)``."""
        return self.encode_dense_and_global(images)[1]

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images ``(B, 3, H, W)`` -> CLIP's own global embeddings ``(B, D)``."""
        return self.model.encode_image(images.to(device=self.device, dtype=self.dtype)).float()

    @torch.inference_mode()
    def encode_text(self, names: Sequence[str]) -> torch.Tensor:
        """Class names -> L2-normalised embeddings ``(N, D)`` (template ensemble, then renormalised).

        Each name is rendered with every template, encoded, normalised, averaged over the
        templates and normalised again. Results are cached per name, so a repeated vocabulary
        costs no text-encoder call.
        """
        names = list(names)
        if not names:
            raise VocabularyError("No class names given; pass at least one name.")
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise VocabularyError(f"Class names must be non-empty strings, got {name!r}.")
        missing = list(dict.fromkeys(n for n in names if n not in self._text_cache))
        num_templates = len(self.templates)
        per_call = max(1, _TEXT_BATCH // num_templates)
        for start in range(0, len(missing), per_call):
            chunk = missing[start : start + per_call]
            prompts = [template(name) for name in chunk for template in self.templates]
            tokens = self.tokenizer(prompts).to(self.device)
            embeds = self.model.encode_text(tokens).float()
            embeds = embeds / embeds.norm(dim=-1, keepdim=True)
            embeds = embeds.view(len(chunk), num_templates, -1).mean(dim=1)
            embeds = embeds / embeds.norm(dim=-1, keepdim=True)
            for name, embed in zip(chunk, embeds):
                self._text_cache[name] = embed
        return torch.stack([self._text_cache[n] for n in names])

    def clear_text_cache(self) -> None:
        self._text_cache.clear()
