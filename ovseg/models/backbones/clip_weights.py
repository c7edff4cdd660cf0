"""Find and load CLIP weights: open_clip pretrained tags, local files and hf-hub style folders.

Models are always built uninitialised by open_clip (``pretrained=None``) and their weights are then
loaded through :func:`ovseg.weights.load_state_dict`, the project's one safe loader. Pretrained
tags resolve to files in the Hugging Face cache (found without network access) or, when the
network is allowed, through open_clip's own download helpers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.factory import convert_to_custom_text_state_dict, resize_pos_embed

from ovseg.errors import CheckpointError, ConfigError, WeightsNotFoundError
from ovseg.weights import load_state_dict

# Preferred weight files inside an open_clip hf-hub style folder, best first.
_FOLDER_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
_HF_ALTERNATIVES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def _hf_repo_and_files(pretrained_cfg: dict[str, Any]) -> tuple[str, list[str]]:
    """``(repo_id, candidate file names)`` of a tag's Hugging Face location ('' if it has none)."""
    repo_id, filename = os.path.split(pretrained_cfg.get("hf_hub", ""))
    if not filename:
        return repo_id, list(_HF_ALTERNATIVES)
    stem, suffix = os.path.splitext(filename)
    safe = [f"{stem}.safetensors"] if suffix in (".bin", ".pth") else []
    return repo_id, [*safe, filename]


def resolve_pretrained_tag(model_name: str, tag: str, cache_dir: str | None = None) -> Path:
    """Return the local weight file for ``(model_name, tag)``; never downloads when offline.

    Raises ``ConfigError`` for a tag open_clip does not know and ``WeightsNotFoundError`` naming the
    file to fetch (and where to put it) when the file is absent and cannot be downloaded.
    """
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ConfigError(
            f"open_clip knows no pretrained tag {tag!r} for {model_name!r}. "
            f"Known tags: {', '.join(tags) or 'none'}; or pass checkpoint=PATH to a local file."
        )
    repo_id, filenames = _hf_repo_and_files(cfg)
    if repo_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in filenames:
            cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
            if isinstance(cached, str) and os.path.isfile(cached):
                return Path(cached)
    if not is_offline():
        try:
            path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
            if path and os.path.isfile(path):
                return Path(path)
        except Exception as exc:  # network errors come in many types
            reason = f" (download failed: {type(exc).__name__}: {str(exc)[:200]})"
        else:
            reason = ""
    else:
        reason = " (HF_HUB_OFFLINE is set)"
    where = (
        f"the file {filenames[0]} of the Hugging Face repo {repo_id}"
        if repo_id
        else f"{cfg.get('url')}"
    )
    raise WeightsNotFoundError(
        f"Weights for {model_name} / {tag} are not on this machine{reason}. Download {where} "
        f"and either place it in the Hugging Face cache (huggingface-cli download {repo_id} "
        f"{filenames[0]}) or pass its path as checkpoint=PATH (--checkpoint PATH on the CLI)."
        if repo_id
        else f"Weights for {model_name} / {tag} are not on this machine{reason}. Download {where} "
        "and pass its path as checkpoint=PATH."
    )


def find_weights_in_folder(folder: Path) -> Path:
    """The weight file of an open_clip hf-hub style folder (``open_clip_config.json`` beside it)."""
    for name in _FOLDER_WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(
        p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth")
    )
    if len(found) == 1:
        return folder / found[0]
    raise WeightsNotFoundError(
        f"No weight file in {folder} (expected one of {', '.join(_FOLDER_WEIGHT_NAMES)}"
        + (f"; found several: {', '.join(found)}" if found else "")
        + "). Put the model's open_clip_model.safetensors next to open_clip_config.json."
    )


def read_folder_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "open_clip_config.json"
    if not config_path.is_file():
        raise WeightsNotFoundError(
            f"{folder} is a folder but has no open_clip_config.json; pass the weight file itself "
            "with model_name=ARCH, or add the config as open_clip's push_to_hf_hub writes it."
        )
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    if "model_cfg" not in data:
        raise CheckpointError(f"{config_path} has no 'model_cfg' entry.")
    return data


def _looks_like_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(
            name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist()
        )


def load_clip_state_dict(model: torch.nn.Module, path: Path) -> None:
    """Load an open_clip-keyed (or OpenAI-keyed) state dict file into ``model``, strictly."""
    if _looks_like_torchscript(path):
        raise CheckpointError(
            f"{path} is a TorchScript archive (OpenAI's original .pt format), which cannot be loaded "
            "without running code from the file. Use the same weights as open_clip_model.safetensors "
            "(e.g. the Hugging Face repo timm/vit_base_patch16_clip_224.openai for ViT-B-16 openai)."
        )
    state_dict = load_state_dict(path)
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)
    for key in ("input_resolution", "context_length", "vocab_size"):
        state_dict.pop(key, None)
    if "logit_scale" in state_dict and state_dict["logit_scale"].ndim != model.logit_scale.ndim:
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(model.logit_scale.shape)
    resize_pos_embed(state_dict, model)
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(
            f"{path} does not fit this architecture: {str(exc).splitlines()[-1].strip()} "
            "Check that model_name matches the checkpoint."
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit this architecture: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}. Check model_name matches the checkpoint."
        )
