"""Writing per-image results: label PNG, colour overlay with legend, JSON summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ovseg.fileio import atomic_write_text
from ovseg.io import write_png_atomic
from ovseg.structures import OVSegResult
from ovseg.visualize import overlay


def write_semantic_outputs(
    result: OVSegResult, image: np.ndarray, out_dir: Path, stem: str
) -> dict[str, Path]:
    """Write ``<stem>_labels.png`` (class index per pixel, vocabulary order; 255 unlabelled;
    16-bit when there are more than 255 classes), ``<stem>_overlay.png`` and ``<stem>.json``."""
    out_dir = Path(out_dir)
    labels = result.sem_seg
    dtype = np.uint8 if len(result.class_names) < 255 else np.uint16
    paths = {
        "labels": out_dir / f"{stem}_labels.png",
        "overlay": out_dir / f"{stem}_overlay.png",
        "json": out_dir / f"{stem}.json",
    }
    write_png_atomic(labels.astype(dtype), paths["labels"])
    write_png_atomic(overlay(image, labels, result.class_names), paths["overlay"])
    atomic_write_text(paths["json"], json.dumps(result.to_dict(), indent=2) + "\n")
    return paths
