"""Reader for a plain folder of images and label maps with a class file (your own data).

Layout::

    <root>/
        images/<name>.jpg|.jpeg|.png
        labels/<name>.png            single-channel (mode L, P or 16-bit): value = class index
                                     (line order of the class file, from 0), 255 = ignored
        classes.txt                  one class per line, synonyms after commas
                                     ("display: a, b" shows "display" and queries a and b)

Every image needs a label with the same name and the reverse. ``reduce_zero_label`` reads
labels whose 0 means "unlabelled" (ADE style): 0 is ignored and k becomes k - 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ovseg.data.layout import (
    IGNORE_INDEX,
    IMAGE_SUFFIXES,
    LabelMapDataset,
    files_by_key,
    layout_error,
    load_classes,
    pair_files,
    reduce_zero_label,
    require_dir,
)
from ovseg.registry import DATASETS

CLASS_FILENAME = "classes.txt"

FOLDER_TREE = f"""Expected tree (a folder dataset):
  <root>/
      images/<name>.jpg (or .jpeg / .png)
      labels/<name>.png     (value = class index from 0, {IGNORE_INDEX} = ignored)
      {CLASS_FILENAME}           (one class per line, synonyms after commas; or class_file=...)"""


@DATASETS.register(aliases=("folder",))
class FolderDataset(LabelMapDataset):
    """Samples from ``images/`` + ``labels/`` (same names) and a class file.

    Args:
        root: the dataset folder.
        class_file: class names in label order; default ``<root>/classes.txt`` (a bare name
            such as ``"voc21.txt"`` means a packaged file).
        images: image folder name under ``root``.
        labels: label folder name under ``root``.
        reduce_zero_label: 0 = unlabelled (ignored), k -> class k - 1.
        ignore_index: the label value that is not evaluated.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        class_file: str | os.PathLike | None = None,
        images: str = "images",
        labels: str = "labels",
        reduce_zero_label: bool = False,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.dataset_dir = Path(root).expanduser()
        if not self.dataset_dir.is_dir():
            raise layout_error(
                f"Folder dataset root {self.dataset_dir} does not exist or is not a folder.",
                FOLDER_TREE,
            )
        self.reduce_zero_label = bool(reduce_zero_label)
        image_dir = require_dir(self.dataset_dir / images, "the images", FOLDER_TREE)
        label_dir = require_dir(self.dataset_dir / labels, "the label PNGs", FOLDER_TREE)
        samples = pair_files(
            files_by_key(image_dir, IMAGE_SUFFIXES),
            files_by_key(label_dir, ".png"),
            image_dir,
            label_dir,
            "<name>.png",
            FOLDER_TREE,
        )
        if class_file is None:
            class_file = self.dataset_dir / CLASS_FILENAME
            if not class_file.is_file():
                raise layout_error(
                    f"Missing file {class_file} (the class names, one per line in label order); "
                    "write it or pass class_file=...",
                    FOLDER_TREE,
                )
        classes = load_classes(class_file, None, f"Folder dataset {self.dataset_dir}")
        super().__init__(samples, classes, ignore_index=ignore_index)

    def decode_label(self, raw: np.ndarray) -> np.ndarray:
        if self.reduce_zero_label:
            return reduce_zero_label(raw, self.ignore_index)
        return raw.astype(np.int64)
