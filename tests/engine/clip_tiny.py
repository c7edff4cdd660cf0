"""A tiny open_clip architecture and caption CSV for CPU training tests (shared test helper)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MODEL_NAME = "ovseg-test-tiny-clip"
TINY_MODEL_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 40),
    "purple": (140, 40, 170),
    "orange": (240, 140, 20),
    "white": (240, 240, 240),
    "black": (15, 15, 15),
}
SHAPES = ("square", "stripe", "dot", "frame")


def _draw(colour: tuple[int, int, int], shape: str, rng: np.random.Generator) -> np.ndarray:
    image = rng.integers(90, 140, size=(40, 40, 3), dtype=np.uint8)
    mask = np.zeros((40, 40), dtype=bool)
    if shape == "square":
        mask[8:32, 8:32] = True
    elif shape == "stripe":
        mask[:, 14:26] = True
    elif shape == "dot":
        yy, xx = np.mgrid[:40, :40]
        mask = (yy - 20) ** 2 + (xx - 20) ** 2 < 100
    else:
        mask[:, :] = True
        mask[6:34, 6:34] = False
    image[mask] = colour
    return image


def make_caption_data(root: Path, n: int = 32, name: str = "train", seed: int = 0) -> Path:
    """Write ``n`` 40x40 RGB PNGs and a tab-separated open_clip-style CSV; returns the CSV path."""
    rng = np.random.default_rng(seed)
    image_dir = root / f"{name}_images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = ["filepath\ttitle"]
    names = list(COLOURS)
    for i in range(n):
        colour = names[i % len(names)]
        shape = SHAPES[(i // len(names)) % len(SHAPES)]
        file = image_dir / f"{i:03d}.png"
        Image.fromarray(_draw(COLOURS[colour], shape, rng)).save(file)
        rows.append(f"{image_dir.name}/{file.name}\ta {colour} {shape}")
    csv_path = root / f"{name}.csv"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return csv_path


def make_model_config_dir(root: Path) -> Path:
    """A folder holding the tiny architecture's open_clip JSON config."""
    folder = root / "model_configs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODEL_NAME}.json").write_text(json.dumps(TINY_MODEL_CONFIG), encoding="utf-8")
    return folder


def tiny_train_config(
    root: Path,
    work_dir: Path,
    *,
    val: bool = False,
    train: dict[str, Any] | None = None,
    task: dict[str, Any] | None = None,
    batch_size: int = 8,
    optimizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A full training config for ContrastiveCLIP on the tiny data below ``root``.

    The default optimiser is AdamW(lr 1e-3); ``optimizer`` replaces it.
    """
    train_csv = root / "train.csv"
    if not train_csv.exists():
        make_caption_data(root, 32, "train", seed=0)
    data: dict[str, Any] = {
        "train": {"type": "CsvCaptionDataset", "csv_path": str(train_csv)},
        "batch_size": batch_size,
        "num_workers": 0,
    }
    if val:
        val_csv = root / "val.csv"
        if not val_csv.exists():
            make_caption_data(root, 11, "val", seed=1)  # odd: uneven shards
        data["val"] = {"type": "CsvCaptionDataset", "csv_path": str(val_csv)}
    return {
        "custom_imports": ["ovseg.tasks.contrastive_clip", "ovseg.data.captions"],
        "task": {
            "type": "ContrastiveCLIP",
            "model_name": MODEL_NAME,
            "model_config_dir": str(make_model_config_dir(root)),
            **(task or {}),
        },
        "data": data,
        "optimizer": optimizer
        or {"type": "AdamW", "lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.98], "eps": 1e-6},
        "schedule": {"type": "cosine", "warmup_iters": 2, "min_lr_ratio": 0.1},
        "train": {
            "max_iters": 7,
            "log_interval": 1,
            "ckpt_interval": 0,
            "seed": 0,
            "keep_last": 2,
            "amp": "auto",
            **(train or {}),
        },
        "work_dir": str(work_dir),
    }
