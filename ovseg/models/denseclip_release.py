"""The authors' released DenseCLIP checkpoints (raoyongming/DenseCLIP, ADE20K, Semantic FPN).

The model zoo of the reference repository publishes one mmsegmentation checkpoint per config
(:data:`RELEASES`): an mmcv file ``{"state_dict": {...}, "meta": {...}}`` of the ``DenseCLIP``
segmentor. Its keys (``segmentation/denseclip/denseclip.py``, ``models.py``; mmseg's ``FPN``
and ``FPNHead``) are renamed onto :class:`~ovseg.models.denseclip.DenseCLIPSegmentor` built in
the closed-set layout (``num_classes=150``, ``context_length=13``):

=================================  ==============================================
reference                          ovseg
=================================  ==============================================
``backbone.fpn{1..4}.*`` (ViT)     ``backbone.levels.{0..3}.*``
``backbone.*``                     ``backbone.visual.*`` (open_clip's names)
``text_encoder.*``                 ``prompt.text_encoder.*``
``contexts``                       ``prompt.contexts``
``gamma``, ``context_decoder.*``   the same
``neck.*``                         ``decode_head.neck.*``
``decode_head.scale_heads.*``      ``decode_head.head.scale_heads.*``
``decode_head.conv_seg.*``         ``decode_head.classifier.conv.*``
=================================  ==============================================

The file is read only through :func:`ovseg.weights.load_state_dict` (``weights_only``, pickle
globals checked) and loaded strictly: a key left over or missing, or a shape that does not fit,
is a :class:`~ovseg.errors.CheckpointError` listing them. ``pixel_mean`` / ``pixel_std`` are not
in the file; they are CLIP's statistics, which the reference normalises with too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ovseg.errors import CheckpointError, ConfigError, WeightsNotFoundError
from ovseg.model_zoo.denseclip_files import (
    DENSECLIP_RELEASES,
    release_missing_message,
    release_path,
)
from ovseg.models.denseclip import DenseCLIPSegmentor
from ovseg.weights import load_state_dict

__all__ = [
    "RELEASES",
    "build_from_release",
    "convert_release_state_dict",
    "find_release_file",
    "release_model_config",
]

_COMMON = {
    "num_contexts": 8,
    "context_length": 13,
    "num_classes": 150,
    "decoder": {"width": 256, "heads": 4, "layers": 3, "dropout": 0.1},
    "gamma_init": 1e-4,
    "neck": "SemanticFPN",
    "neck_args": {"fpn_channels": 256, "channels": 256, "dropout": 0.1},
}

#: ``name -> {file, url, config, model}``: the released checkpoints (file names and addresses:
#: :data:`~ovseg.model_zoo.denseclip_files.DENSECLIP_RELEASES`) with the segmentor arguments of
#: the reference config each was trained with.
_MODELS: dict[str, dict[str, Any]] = {
    "res50": {"model_name": "RN50", "quick_gelu": True, "input_resolution": 512, **_COMMON},
    "res101": {"model_name": "RN101", "quick_gelu": True, "input_resolution": 512, **_COMMON},
    "vit-b": {
        "model_name": "ViT-B-16",
        "quick_gelu": True,
        "input_resolution": 640,
        "out_indices": [3, 5, 7, 11],
        "drop_path_rate": 0.1,
        "cls_pos_includes_class_embedding": True,
        "score_concat_index": 2,
        **_COMMON,
    },
}
RELEASES: dict[str, dict[str, Any]] = {
    name: {**DENSECLIP_RELEASES[name], "model": model} for name, model in _MODELS.items()
}

_PREFIXES = (  # (reference prefix, ovseg prefix), first match wins
    ("backbone.fpn1.", "backbone.levels.0."),
    ("backbone.fpn2.", "backbone.levels.1."),
    ("backbone.fpn3.", "backbone.levels.2."),
    ("backbone.fpn4.", "backbone.levels.3."),
    ("backbone.", "backbone.visual."),
    ("text_encoder.", "prompt.text_encoder."),
    ("context_decoder.", "context_decoder."),
    ("neck.", "decode_head.neck."),
    ("decode_head.scale_heads.", "decode_head.head.scale_heads."),
    ("decode_head.conv_seg.", "decode_head.classifier.conv."),
)
_EXACT = {"contexts": "prompt.contexts", "gamma": "gamma"}
_NOT_IN_FILE = ("pixel_mean", "pixel_std")


def release_model_config(name: str) -> dict[str, Any]:
    """The segmentor arguments of release ``name`` (a copy)."""
    if name not in RELEASES:
        raise ConfigError(
            f"Unknown DenseCLIP release {name!r}; the released checkpoints are "
            f"{', '.join(sorted(RELEASES))}."
        )
    return {key: (dict(v) if isinstance(v, dict) else v)
            for key, v in RELEASES[name]["model"].items()}  # fmt: skip


def find_release_file(name: str, weights: str | os.PathLike | None = None) -> Path:
    """``weights`` when given, else ``<torch hub dir>/checkpoints/<release file>``.

    Raises:
        WeightsNotFoundError: the file is absent (the message names it and its address).
    """
    if name not in RELEASES:
        release_model_config(name)  # raises the ConfigError naming the releases
    if weights is not None:
        path = Path(weights).expanduser()
    else:
        path = release_path(name)
    if not path.is_file():
        raise WeightsNotFoundError(release_missing_message(name, path))
    return path


def _ovseg_key(key: str) -> str | None:
    if key in _EXACT:
        return _EXACT[key]
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def convert_release_state_dict(
    state: Mapping[str, torch.Tensor], segmentor: DenseCLIPSegmentor, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename a released state dict onto ``segmentor``'s keys (see the module docstring).

    Raises:
        CheckpointError: keys without a counterpart, keys of the segmentor the file does not
            hold, or shapes that differ (all listed).
    """
    target = segmentor.state_dict()
    converted: dict[str, torch.Tensor] = {}
    placed: set[str] = set()
    left_over, mismatched = [], []
    for key, value in state.items():
        new = _ovseg_key(key)
        if new is None or new not in target or new in placed:
            left_over.append(key)
            continue
        placed.add(new)
        if tuple(value.shape) != tuple(target[new].shape):
            mismatched.append(f"{key} {tuple(value.shape)} -> {new} {tuple(target[new].shape)}")
        else:
            converted[new] = value
    missing = sorted(set(target) - placed - set(_NOT_IN_FILE))
    if left_over or missing or mismatched:
        parts = []
        if left_over:
            parts.append(f"keys with no place in the model: {', '.join(sorted(left_over)[:20])}")
        if missing:
            parts.append(f"model keys the file lacks: {', '.join(missing[:20])}")
        if mismatched:
            parts.append(f"shapes that differ: {'; '.join(mismatched[:10])}")
        raise CheckpointError(
            f"{source} is not a released DenseCLIP checkpoint of this architecture "
            f"({segmentor.config['model_name']}, {segmentor.num_classes} classes): "
            + "; ".join(parts)
            + "."
        )
    for key in _NOT_IN_FILE:
        converted[key] = target[key]
    return converted


def build_from_release(
    name: str,
    weights: str | os.PathLike | None = None,
    model: Mapping[str, Any] | None = None,
) -> DenseCLIPSegmentor:
    """The segmentor of release ``name`` with the authors' weights, in eval mode.

    ``weights``: the checkpoint file (default: its file name in torch hub's checkpoint folder);
    ``model``: segmentor arguments overriding the release's (tests use tiny architectures).
    """
    path = find_release_file(name, weights)
    cfg = {**release_model_config(name), **dict(model or {})}
    segmentor = DenseCLIPSegmentor(**cfg, load_clip_weights=False)
    state = load_state_dict(path)
    segmentor.load_state_dict(convert_release_state_dict(state, segmentor, str(path)), strict=True)
    return segmentor.eval()
