"""Exporting a :class:`~ovseg.models.denseclip.DenseCLIPSegmentor` and rebuilding it.

The export is one safetensors file: the full state dict (CLIP included) and, in its metadata,
the segmentor's keyword arguments and the class names it was trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ovseg.errors import CheckpointError
from ovseg.models.denseclip import EXPORT_ARCHITECTURE, DenseCLIPSegmentor
from ovseg.weights import load_safetensors_metadata, load_state_dict, save_state_dict


def export_segmentor(
    segmentor: DenseCLIPSegmentor, path: str | os.PathLike, classes: Sequence[str] = ()
) -> Path:
    """Write the full state dict (CLIP included) and the architecture config, atomically."""
    state = {k: v.detach().cpu() for k, v in segmentor.state_dict().items()}
    return save_state_dict(state, path, metadata=segmentor.export_metadata(classes))


def build_from_export(
    path: str | os.PathLike, model: Mapping[str, Any] | None = None
) -> DenseCLIPSegmentor:
    """Rebuild a segmentor from an exported safetensors file (see :func:`export_segmentor`).

    ``model`` (segmentor keyword arguments) overrides the architecture stored in the file;
    weights always come from the file, loaded through :mod:`ovseg.weights` (strict keys).
    """
    cfg: dict[str, Any]
    if model is None:
        meta = load_safetensors_metadata(path) if str(path).endswith(".safetensors") else {}
        if meta.get("architecture") != EXPORT_ARCHITECTURE or "model" not in meta:
            raise CheckpointError(
                f"{path} does not say which DenseCLIP architecture it holds; pass "
                "pipeline.model={model_name: ..., ...} with the settings it was trained with."
            )
        cfg = json.loads(meta["model"])
    else:
        cfg = dict(model)
    for key in ("pretrained", "checkpoint", "load_clip_weights"):
        cfg.pop(key, None)
    segmentor = DenseCLIPSegmentor(**cfg, load_clip_weights=False)
    load_export_weights(segmentor, path)
    return segmentor.eval()


def load_export_weights(segmentor: DenseCLIPSegmentor, path: str | os.PathLike) -> None:
    """Copy an exported file's weights into ``segmentor`` (strict keys and shapes; fp16 files
    are cast to the segmentor's dtype), through the safe loader of :mod:`ovseg.weights`."""
    state = load_state_dict(path)
    try:
        segmentor.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        name = segmentor.config["model_name"]
        raise CheckpointError(
            f"{path} does not fit the DenseCLIP architecture {name!r}: {exc}"
        ) from exc
