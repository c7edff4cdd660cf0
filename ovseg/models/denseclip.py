"""DenseCLIP (Rao et al., CVPR 2022): language-guided dense prediction with context-aware prompting.

:class:`DenseCLIPSegmentor` wires the parts together (shapes for normalised images
``(B, 3, H, W)`` and ``K`` class names)::

    images ──► ClipPyramid ──► features [(B, C_i, H/s_i, W/s_i)], global (B, D), dense (B, D, h, w)
    names ──► PromptLearner ──► t (K, D)            [SOT][ctx x N][name][EOT], frozen text encoder
    t, [global; dense] ──► ContextDecoder ──► t' = t + gamma * decoder(t, context)   (B, K, D)
    dense, t' ──► score map s = cos(dense, t')     (B, K, h, w)
    features[level] ⊕ (1/K) Σ_k s_k t̂'_k ──► decode head (NECKS) ──► logits (B, K, H/4, W/4)

Training (:class:`ovseg.tasks.denseclip.DenseCLIPTask`, registered as ``DenseCLIP`` in ``TASKS``) minimises
``CE(logits) + 0.4 * CE(s / 0.07)``, both upsampled to the label size, with the CLIP text encoder
frozen and the image backbone at 0.1x the learning rate.

Open vocabulary, an extension of the paper: the paper trains and tests on one fixed class list
(its decode head ends in a ``K``-way convolution and the score map adds ``K`` channels). Here
every layer whose weights would be indexed by class is generated from the class embeddings (see
:mod:`ovseg.models.heads.denseclip.score_map` and
:class:`ovseg.models.necks.text_classifier.TextClassifier`), so the trained model also accepts
class names it never saw. For a fixed training vocabulary this reparameterisation is as
expressive as the reference; how well it transfers to unseen names is an empirical question
the paper does not address.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import open_clip
import torch
from torch import Tensor, nn

from ovseg.errors import ConfigError, VocabularyError
from ovseg.models import necks as _necks  # noqa: F401  (registers the decode heads)
from ovseg.models.backbones.clip_pyramid import ClipPyramid, PyramidOutput
from ovseg.models.heads.denseclip import (
    ContextDecoder,
    PromptLearner,
    pixel_text_score_map,
    score_text_features,
    visual_context,
)
from ovseg.registry import NECKS
from ovseg.settings import merge_settings

LOGGER = logging.getLogger(__name__)
IGNORE_INDEX = 255
DEFAULT_DECODER = {"width": 256, "heads": 4, "layers": 3, "dropout": 0.1}
DEFAULT_NECK = "SemanticFPN"
EXPORT_ARCHITECTURE = "DenseCLIPSegmentor"


class DenseCLIPOutput(NamedTuple):
    """``logits (B, K, H_0, W_0)`` of the decode head (finest level, stride 4), ``score_map
    (B, K, h, w)`` cosine pixel-text scores, ``text (B, K, D)`` context-updated embeddings."""

    logits: Tensor
    score_map: Tensor
    text: Tensor


@contextlib.contextmanager
def _quiet_random_init():
    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "No pretrained weights loaded" not in record.getMessage()

    root, quiet = logging.getLogger(), _Filter()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _resolve_quick_gelu(model_name: str, pretrained: str | None, quick_gelu: bool | None) -> bool:
    if quick_gelu is not None:
        return bool(quick_gelu)
    if pretrained:
        return bool(open_clip.get_pretrained_cfg(model_name, pretrained).get("quick_gelu", False))
    return False


def build_clip(
    model_name: str,
    pretrained: str | None,
    checkpoint: str | os.PathLike | None,
    quick_gelu: bool,
    cache_dir: str | None,
    load_weights: bool,
) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    """The open_clip model (train mode, float32) and its mean / std (RGB, [0, 1] units)."""
    from ovseg.models.backbones.clip import build_open_clip_model, register_packaged_model_configs

    if checkpoint is not None and Path(checkpoint).is_dir():
        raise ConfigError(
            f"DenseCLIP takes a CLIP weight *file*; {checkpoint} is a folder. Pass the weight "
            "file inside it as checkpoint= and the architecture as model_name=."
        )
    if load_weights:
        model, mean, std = build_open_clip_model(
            model_name, pretrained, checkpoint, quick_gelu=quick_gelu, cache_dir=cache_dir
        )
    else:  # the caller loads a full DenseCLIP state dict right after
        register_packaged_model_configs()
        if model_name not in open_clip.list_models():
            raise ConfigError(f"open_clip has no architecture {model_name!r}.")
        with _quiet_random_init():
            model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
        mean = tuple(model.visual.preprocess_cfg["mean"])
        std = tuple(model.visual.preprocess_cfg["std"])
    return model.float().train(), tuple(mean), tuple(std)


def _cut_text_positions(clip: nn.Module, length: int) -> None:
    """Keep the first ``length`` text positions of an open_clip model (embedding and causal
    mask), as the reference's text encoder stores them."""
    stored = clip.positional_embedding
    if not 2 < length <= stored.shape[0]:
        raise ConfigError(f"context_length must lie in 3..{stored.shape[0]}, got {length}.")
    clip.positional_embedding = nn.Parameter(stored.detach()[:length].clone())
    mask = getattr(clip, "attn_mask", None)
    if mask is not None:
        clip.register_buffer("attn_mask", mask[:length, :length].clone(), persistent=False)


class DenseCLIPSegmentor(nn.Module):
    """CLIP pyramid backbone + context-aware prompting + pixel-text score map + decode head.

    Args:
        model_name: open_clip architecture (``RN50``, ``RN101``, ``ViT-B-16``, or one
            registered at run time).
        pretrained, checkpoint: CLIP weights (an open_clip tag such as ``openai``, or a weight
            file); ignored with ``load_clip_weights=False``.
        load_clip_weights: False builds CLIP uninitialised, for loading an exported DenseCLIP
            state dict afterwards.
        quick_gelu: the architecture's activation (None: what the pretrained tag says).
        num_contexts: learnable context tokens (8).
        decoder: context decoder ``{width: 256, heads: 4, layers: 3, dropout: 0.1}``.
        gamma_init: initial value of every entry of ``gamma`` (1e-4).
        neck: decode head name in ``NECKS`` (``SemanticFPN`` or ``UPerNet``).
        neck_args: its keyword arguments (``in_channels`` and ``text_dim`` are filled in). A
            name plus arguments rather than a ``{type: ...}`` mapping, so that configs are not
            built by the registry before the channel counts are known.
        score_concat_index: pyramid level receiving the score features (None: the level on the
            dense-token grid: 3 for ResNets, 2 for ViT-B/16, as the reference).
        input_resolution, out_indices, drop_path_rate, cls_pos_includes_class_embedding: see
            :class:`~ovseg.models.backbones.clip_pyramid.ClipPyramid`.
        num_classes: None (open vocabulary, default) or ``K``: the reference's closed-set layout
            (``K`` raw score channels, a ``K``-way classifier; ``SemanticFPN`` only).
        context_length: text positions kept (None: all of CLIP's; the reference: 13).

    Buffers ``pixel_mean`` / ``pixel_std`` ``(1, 3, 1, 1)`` hold the model's normalisation (RGB,
    [0, 1] units) and travel with the state dict. :attr:`config` holds the keyword arguments that
    rebuild this architecture (weights excluded).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        *,
        load_clip_weights: bool = True,
        quick_gelu: bool | None = None,
        cache_dir: str | None = None,
        num_contexts: int = 8,
        decoder: Mapping[str, Any] | None = None,
        gamma_init: float = 1e-4,
        neck: str = DEFAULT_NECK,
        neck_args: Mapping[str, Any] | None = None,
        score_concat_index: int | None = None,
        input_resolution: int | None = None,
        out_indices: Sequence[int] | None = None,
        drop_path_rate: float = 0.0,
        cls_pos_includes_class_embedding: bool = False,
        num_classes: int | None = None,
        context_length: int | None = None,
    ) -> None:
        super().__init__()
        quick_gelu = _resolve_quick_gelu(model_name, pretrained, quick_gelu)
        decoder_cfg = merge_settings(DEFAULT_DECODER, decoder, "context decoder")
        if not isinstance(neck, str):
            raise ConfigError(
                f"neck must be a NECKS name such as 'SemanticFPN' (arguments go in neck_args), "
                f"got {neck!r}."
            )
        neck_cfg = {"type": neck, **dict(neck_args or {})}
        self.config: dict[str, Any] = {
            "model_name": model_name,
            "quick_gelu": quick_gelu,
            "num_contexts": int(num_contexts),
            "decoder": decoder_cfg,
            "gamma_init": float(gamma_init),
            "neck": neck,
            "neck_args": dict(neck_args or {}),
            "score_concat_index": score_concat_index,
            "input_resolution": input_resolution,
            "out_indices": list(out_indices) if out_indices is not None else None,
            "drop_path_rate": float(drop_path_rate),
            "cls_pos_includes_class_embedding": bool(cls_pos_includes_class_embedding),
            "num_classes": None if num_classes is None else int(num_classes),
            "context_length": None if context_length is None else int(context_length),
        }
        if num_classes is not None and (int(num_classes) < 1 or neck != DEFAULT_NECK):
            raise ConfigError(
                f"num_classes (the closed-set layout) needs a positive count and the "
                f"{DEFAULT_NECK} head; got {num_classes!r} with {neck!r}."
            )
        clip, mean, std = build_clip(
            model_name, pretrained, checkpoint, quick_gelu, cache_dir, load_clip_weights
        )
        if context_length is not None:
            _cut_text_positions(clip, int(context_length))
        self.backbone = ClipPyramid(
            clip.visual,
            input_resolution=input_resolution,
            out_indices=out_indices,
            drop_path_rate=drop_path_rate,
            cls_pos_includes_class_embedding=cls_pos_includes_class_embedding,
        )
        self.prompt = PromptLearner(clip, open_clip.get_tokenizer(model_name), num_contexts)
        embed_dim = self.prompt.embed_dim
        if embed_dim != self.backbone.embed_dim:
            raise ConfigError(
                f"{model_name}: text embeddings ({embed_dim}) and image embeddings "
                f"({self.backbone.embed_dim}) differ in size; DenseCLIP needs a joint space."
            )
        self.embed_dim = embed_dim
        self.context_decoder = ContextDecoder(embed_dim, **decoder_cfg)
        self.gamma = nn.Parameter(torch.full((embed_dim,), float(gamma_init)))
        level = self.backbone.dense_level if score_concat_index is None else int(score_concat_index)
        if not 0 <= level < 4:
            raise ConfigError(f"score_concat_index must be 0..3, got {score_concat_index}.")
        self.score_level = level
        self.num_classes = None if num_classes is None else int(num_classes)
        in_channels = list(self.backbone.out_channels)
        in_channels[level] += embed_dim if self.num_classes is None else self.num_classes
        if self.num_classes is not None:
            neck_cfg["num_classes"] = self.num_classes
        self.decode_head = NECKS.build(neck_cfg, in_channels=in_channels, text_dim=embed_dim)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1))

    # ------------------------------------------------------------------ text
    def tokenize(self, names: Sequence[str]) -> Tensor:
        """Class names -> ``(K, L)`` token ids for :meth:`encode_text`."""
        return self.prompt.tokenize(names)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """``(K, L)`` token ids -> ``(K, D)`` prompted class embeddings (before the decoder)."""
        return self.prompt(tokens.to(self.gamma.device))

    def encode_names(self, names: Sequence[str]) -> Tensor:
        return self.encode_text(self.tokenize(names))

    # ------------------------------------------------------------------ image
    def normalize(self, images: Tensor) -> Tensor:
        """RGB ``(B, 3, H, W)`` in [0, 1] -> normalised with :attr:`pixel_mean` / ``pixel_std``."""
        return (images - self.pixel_mean) / self.pixel_std

    def encode_image(self, images: Tensor) -> PyramidOutput:
        """Normalised ``(B, 3, H, W)`` -> backbone pyramid (vocabulary-independent part)."""
        return self.backbone(images)

    def decode(self, pyramid: PyramidOutput, text: Tensor) -> DenseCLIPOutput:
        """Backbone output + ``(K, D)`` or ``(B, K, D)`` class embeddings -> :class:`DenseCLIPOutput`."""
        batch = pyramid.dense.shape[0]
        if text.ndim == 2:
            text = text.unsqueeze(0).expand(batch, -1, -1)
        context = visual_context(pyramid.global_embed, pyramid.dense)
        text = text + self.gamma * self.context_decoder(text, context)
        score_map = pixel_text_score_map(pyramid.dense, text)
        features = list(pyramid.features)
        level = features[self.score_level]
        if self.num_classes is None:
            score_features = score_text_features(score_map, text)
        elif score_map.shape[1] != self.num_classes:
            raise VocabularyError(
                f"This DenseCLIP model is closed-set: it scores exactly its {self.num_classes} "
                f"training classes, in order, not {score_map.shape[1]} names; use its class list "
                "(the preset's vocabulary)."
            )
        else:
            score_features = score_map
        if score_features.shape[-2:] != level.shape[-2:]:
            raise ConfigError(
                f"Score map grid {tuple(score_features.shape[-2:])} differs from pyramid level "
                f"{self.score_level} ({tuple(level.shape[-2:])}); set score_concat_index to the "
                "level on the dense-token grid."
            )
        features[self.score_level] = torch.cat([level, score_features.to(level.dtype)], dim=1)
        return DenseCLIPOutput(self.decode_head(features, text), score_map, text)

    def forward(self, images: Tensor, text: Tensor) -> DenseCLIPOutput:
        """Normalised ``(B, 3, H, W)`` images and class embeddings -> :class:`DenseCLIPOutput`."""
        return self.decode(self.encode_image(images), text)

    def export_metadata(self, classes: Sequence[str] = ()) -> dict[str, str]:
        """safetensors metadata that lets :func:`build_from_export` rebuild this model."""
        return {
            "format": "pt",
            "architecture": EXPORT_ARCHITECTURE,
            "model": json.dumps(self.config, sort_keys=True),
            "classes": json.dumps(list(classes)),
        }
