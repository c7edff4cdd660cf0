"""Write scenes in the ADE20K (ADEChallengeData2016) layout.

Tree written under ``OUT``::

    OUT/ADEChallengeData2016/
        images/training/ADE_train_00000001.jpg        RGB JPEG, quality 95, 4:4:4
        images/validation/ADE_val_00000001.jpg
        annotations/training/ADE_train_00000001.png   uint8, class_index + 1, 0 = unlabelled
        annotations/validation/ADE_val_00000001.png
        ovseg_classes.txt    one class per line, index order (written last)
        ovseg_split.json     {"classes": [...], "unseen": [...]} (written last)

Readers subtract one with ``reduce_zero_label`` (0 becomes 255 = ignore), exactly as for ADE.
Each image is written before its annotation, so an interrupted run leaves at worst an image
without annotation, which ``ADE20KDataset`` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ovseg.data.ade_layout import ADE_DIRNAME, CLASS_FILENAME, SPLIT_FILENAME
from ovseg.data.synthetic import Scene
from ovseg.fileio import atomic_write_json, atomic_write_text, save_jpeg
from ovseg.io import write_png_atomic

ADE_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("training", "ADE_train"),
    "val": ("validation", "ADE_val"),
}
"""Our split name -> (ADE folder name, file stem prefix)."""


def ade_stem(split: str, index: int) -> str:
    """'ADE_train_00000001' for split 'train', index 1 (ADE numbers from 1)."""
    return f"{ADE_SPLITS[split][1]}_{index:08d}"


def encode_ade_label(label: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) int class indices (255 or negative = unlabelled) -> uint8 ADE values (index + 1)."""
    if num_classes > 254:
        raise ValueError(f"ADE uint8 labels hold at most 254 classes, got {num_classes}.")
    valid = (label >= 0) & (label < num_classes)
    return np.where(valid, label + 1, 0).astype(np.uint8)


class ADE20KWriter:
    """Streams scenes into the ADE20K layout; ``finalize`` writes the class and split files."""

    def __init__(
        self,
        out_dir: str | Path,
        class_names: Sequence[str],
        unseen: Sequence[str],
        *,
        quality: int = 95,
    ) -> None:
        self.root = Path(out_dir) / ADE_DIRNAME
        self.class_names = list(class_names)
        self.unseen = list(unseen)
        self.quality = quality
        self.counts = {split: 0 for split in ADE_SPLITS}

    def add(self, scene: Scene, split: str, index: int) -> None:
        """Write scene ``index`` (1-based) of ``split`` ('train' or 'val')."""
        folder, _ = ADE_SPLITS[split]
        stem = ade_stem(split, index)
        save_jpeg(self.root / "images" / folder / f"{stem}.jpg", scene.image, self.quality)
        label = encode_ade_label(scene.label, len(self.class_names))
        write_png_atomic(label, self.root / "annotations" / folder / f"{stem}.png", durable=False)
        self.counts[split] += 1

    def finalize(self) -> dict:
        """Write ``ovseg_classes.txt`` and ``ovseg_split.json``; return a summary."""
        class_file = self.root / CLASS_FILENAME
        atomic_write_text(class_file, "".join(f"{n}\n" for n in self.class_names))
        split_file = self.root / SPLIT_FILENAME
        atomic_write_json(
            split_file, {"classes": self.class_names, "unseen": self.unseen}, indent=1
        )
        return {
            "root": str(self.root),
            "class_file": str(class_file),
            "split_file": str(split_file),
            "num_training": self.counts["train"],
            "num_validation": self.counts["val"],
        }
