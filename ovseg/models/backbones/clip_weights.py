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
from ovseg.hub import download_hf_file, is_offline, unreachable_reason
from ovseg.weights import load_state_dict

# The predict override that points a preset's CLIP at a local weight file.
CHECKPOINT_OVERRIDE = "pipeline.backbone.checkpoint"

# Preferred weight files inside an open_clip hf-hub style folder, best first.
_FOLDER_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
_HF_ALTERNATIVES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _hf_repo_and_files(pretrained_cfg: dict[str, Any]) -> tuple[str, list[str]]:
    """``(repo_id, candidate file names)`` of a tag's Hugging Face location ('' if it has none)."""
    repo_id, filename = os.path.split(pretrained_cfg.get("hf_hub", ""))
    if not filename:
        return repo_id, list(_HF_ALTERNATIVES)
    stem, suffix = os.path.splitext(filename)
    safe = [f"{stem}.safetensors"] if suffix in (".bin", ".pth") else []
    return repo_id, [*safe, filename]


def find_cached_pretrained(
    model_name: str, tag: str, cache_dir: str | None = None
) -> tuple[Path | None, dict[str, Any]]:
    """``(local file or None, open_clip's tag config)``; looks only in the Hugging Face cache.

    Raises ``ConfigError`` for a tag open_clip does not know.
    """
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ConfigError(
            f"open_clip knows no pretrained tag {tag!r} for {model_name!r}. Known tags: "
            f"{', '.join(tags) or 'none'}; or give a local weight file as the backbone's "
            f"checkpoint ({CHECKPOINT_OVERRIDE}=/path/file on the command line)."
        )
    repo_id, filenames = _hf_repo_and_files(cfg)
    if repo_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in filenames:
            cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
            if isinstance(cached, str) and os.path.isfile(cached):
                return Path(cached), cfg
    return None, cfg


def pretrained_source(model_name: str, tag: str) -> str:
    """Where ``(model_name, tag)``'s weights are published: ``repo/file`` or a URL."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    repo_id, filenames = _hf_repo_and_files(cfg)
    return f"{repo_id}/{filenames[0]}" if repo_id else str(cfg.get("url") or "?")


def resolve_pretrained_tag(model_name: str, tag: str, cache_dir: str | None = None) -> Path:
    """Return the local weight file for ``(model_name, tag)``; never downloads when offline.

    The Hugging Face cache is searched first; then, unless ``HF_HUB_OFFLINE`` is set, one
    download is tried (after a quick check that the host answers, so a machine without network
    fails in seconds). Raises ``ConfigError`` for a tag open_clip does not know and
    ``WeightsNotFoundError`` with commands that fetch the file when it cannot be had.
    """
    cached, cfg = find_cached_pretrained(model_name, tag, cache_dir)
    if cached is not None:
        return cached
    repo_id, filenames = _hf_repo_and_files(cfg)
    try:
        if repo_id:
            return download_hf_file(repo_id, filenames, cache_dir)
        url = str(cfg.get("url") or "")
        if is_offline():
            raise WeightsNotFoundError("HF_HUB_OFFLINE is set")
        reason = unreachable_reason(url) if url else "open_clip names no download location"
        if reason is not None:
            raise WeightsNotFoundError(f"no network: {reason}")
        try:
            path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
        except Exception as exc:  # network errors come in many types
            raise WeightsNotFoundError(
                f"download failed: {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc
        if not path or not os.path.isfile(path):
            raise WeightsNotFoundError("the download left no file")
        return Path(path)
    except WeightsNotFoundError as exc:
        raise WeightsNotFoundError(
            missing_weights_message(model_name, tag, repo_id, filenames, cfg, str(exc))
        ) from None


def missing_weights_message(
    model_name: str,
    tag: str,
    repo_id: str,
    filenames: list[str],
    cfg: dict[str, Any],
    reason: str,
) -> str:
    """What to run when ``(model_name, tag)``'s weights are absent (commands that work)."""
    head = f"Weights for {model_name} / {tag} are not on this machine ({reason})."
    if repo_id:
        name = filenames[0]
        return (
            f"{head} Fetch them on a machine with network with `hf download {repo_id} {name}` "
            "(into the Hugging Face cache, where ovseg finds them; copy the cache folder "
            f"along), or with `hf download {repo_id} {name} --local-dir DIR` and pass the file "
            f"to ovseg predict as the override {CHECKPOINT_OVERRIDE}=DIR/{name}."
        )
    return (
        f"{head} Download {cfg.get('url') or 'the weight file'} and pass it to ovseg predict as "
        f"the override {CHECKPOINT_OVERRIDE}=/path/to/the/file."
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
