"""Released Hugging Face detector folders, loaded without running code from them.

A folder (as ``save_pretrained`` writes it, or a snapshot of the Hub repository) holds:

* ``config.json`` (architecture; JSON);
* ``model.safetensors`` or ``pytorch_model.bin`` (weights: read by :mod:`ovseg.weights`, so
  safetensors are never unpickled and ``.bin`` files only with ``weights_only``);
* the processor's files: ``preprocessor_config.json`` or ``processor_config.json`` and the
  tokenizer's (``tokenizer_config.json`` with ``tokenizer.json`` / ``vocab.json`` + ``merges.txt`` /
  ``vocab.txt``).

``model`` names either a local folder or a Hub repository (``google/owlv2-base-patch16-ensemble``)
found in the Hugging Face cache; when downloads are allowed (``HF_HUB_OFFLINE`` unset) a missing
repository is fetched file by file first. The model is built from its config by the given
transformers class and filled with the state dict through ``from_pretrained(None, config=...,
state_dict=...)`` (transformers' own key renaming and weight tying apply); no remote code runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ovseg.errors import CheckpointError, MissingDependencyError, WeightsNotFoundError
from ovseg.hub import download_hf_file, is_offline
from ovseg.weights import load_state_dict

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
#: files fetched for a Hub repository (those it lacks are skipped)
HUB_FILES = (
    "config.json",
    *WEIGHT_FILES[:1],
    *PROCESSOR_FILES,
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
)


def import_transformers() -> Any:
    """The transformers module, or a MissingDependencyError naming the extra."""
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            "The open-vocabulary detectors need transformers: pip install 'ovseg[detection]'."
        ) from exc
    return transformers


def _missing_message(model: str, folder: Path | None, missing: Sequence[str]) -> str:
    where = f"{folder}" if folder is not None else f"the Hugging Face cache ({_hub_cache()})"
    return (
        f"Detector weights {model!r} are not available: {where} lacks {', '.join(missing)}. "
        f"They come from the Hugging Face Hub repository https://huggingface.co/{model} "
        "(files config.json, model.safetensors, preprocessor_config.json and the tokenizer "
        "files). On a machine with network: `huggingface-cli download "
        f"{model}` (or unset HF_HUB_OFFLINE and run again); or copy that folder here and set "
        "the detector's model to its path."
        if folder is None
        else f"Detector folder {folder} lacks {', '.join(missing)}. A released Hugging Face "
        "detector folder holds config.json, model.safetensors (or pytorch_model.bin), "
        "preprocessor_config.json (or processor_config.json) and the tokenizer files; download "
        "the whole repository (huggingface-cli download <repo> --local-dir DIR) and point the "
        "detector's model at DIR."
    )


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def missing_files(folder: Path) -> list[str]:
    """The required files ``folder`` lacks (empty: it can be loaded)."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        missing.append(" or ".join(PROCESSOR_FILES))
    if not (folder / "tokenizer_config.json").is_file():
        missing.append("tokenizer_config.json")
    return missing


def _cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` holding its config.json, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def resolve_detector_folder(model: str | os.PathLike) -> Path:
    """The local folder of ``model`` (a folder path or a Hub repository id), complete.

    Raises:
        WeightsNotFoundError: the folder or a required file is missing; the message names the
            files and where they come from.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        missing = missing_files(path)
        if missing:
            raise WeightsNotFoundError(_missing_message(str(model), path, missing))
        return path
    name = str(model)
    looks_like_repo = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_repo:
        raise WeightsNotFoundError(
            f"Detector folder {path} does not exist; give a folder holding config.json, "
            "model.safetensors and the processor files, or a Hugging Face repository id such "
            "as google/owlv2-base-patch16-ensemble."
        )
    snapshot = _cached_snapshot(name)
    if snapshot is None and not is_offline():
        snapshot = _download(name)
    if snapshot is None:
        raise WeightsNotFoundError(_missing_message(name, None, ["the repository snapshot"]))
    missing = missing_files(snapshot)
    if missing:
        raise WeightsNotFoundError(_missing_message(name, snapshot, missing))
    return snapshot


def _download(repo_id: str) -> Path | None:
    folder: Path | None = None
    for filename in HUB_FILES:
        try:
            folder = download_hf_file(repo_id, [filename]).parent
        except WeightsNotFoundError as exc:
            if filename == "config.json":
                raise WeightsNotFoundError(
                    _missing_message(repo_id, None, ["the repository snapshot"]) + f" ({exc})"
                ) from exc
    return folder


def load_hf_model(model_class: Any, config_class: Any, folder: Path, device: Any = None) -> Any:
    """``model_class`` built from ``folder/config.json``, weights through ovseg's safe loader.

    Raises:
        CheckpointError: the weights do not fit the architecture (missing, unexpected or
            mis-shaped parameters).
    """
    config = config_class.from_pretrained(folder, local_files_only=True)
    weights = next(folder / name for name in WEIGHT_FILES if (folder / name).is_file())
    state = load_state_dict(weights)
    try:
        model, info = model_class.from_pretrained(
            None, config=config, state_dict=state, output_loading_info=True
        )
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{weights} does not fit {model_class.__name__}: {exc}") from exc
    problems = {
        key: list(info.get(key) or [])
        for key in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if any(problems.values()):
        detail = "; ".join(f"{k}: {v[:5]}" for k, v in problems.items() if v)
        raise CheckpointError(
            f"{weights} does not fit {model_class.__name__} built from {folder}/config.json "
            f"({detail}); use the weights released with that config."
        )
    model = model.eval()
    return model.to(device) if device is not None else model


def load_hf_processor(processor_class: Any, folder: Path) -> Any:
    """The processor (image processor + tokenizer) saved in ``folder``; no remote code."""
    try:
        return processor_class.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"Cannot read the processor files of {folder} ({exc}); the folder needs "
            "preprocessor_config.json and the tokenizer files of the released repository."
        ) from exc
