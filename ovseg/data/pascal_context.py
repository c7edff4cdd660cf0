"""Reader for Pascal Context: PC60 (with background), PC59 (without) and PC459 (full labels).

PC60 / PC59, as mmsegmentation's ``pascal_context.py`` converter prepares them (``root`` may be
the data root holding ``VOCdevkit``, ``VOCdevkit`` itself or ``VOC2010``)::

    VOCdevkit/VOC2010/
        JPEGImages/2008_000002.jpg ...
        SegmentationClassContext/2008_000002.png ...   uint8: 0 background, 1-59 the classes
        ImageSets/SegmentationContext/{train,val}.txt

``num_classes=60`` keeps the stored values; ``num_classes=59`` applies mmseg's
``reduce_zero_label`` (background -> ignored, k -> k - 1), as ``PascalContext59Dataset`` does.

PC459, as the open-vocabulary papers prepare it (the detectron2-style script
``datasets/prepare_pascal_context_459.py`` of CAT-Seg and the works built on it: ``LabelMap``
of ``trainval/<id>.mat`` minus one, saved as a uint16 TIFF)::

    VOCdevkit/VOC2010/
        JPEGImages/<id>.jpg
        annotations_detectron2/pc459_val/<id>.tif       uint16: 0-458 the classes of labels.txt
                                                        in order, 65535 unlabelled

The samples are the label files (the script writes the val ids only); every one needs its
image. ``ignore_index`` is 65535 (255 is a class here), as the detectron2 metadata says.
"""

from __future__ import annotations

import os

import numpy as np

from ovseg.data.layout import (
    LabelMapDataset,
    files_by_key,
    load_classes,
    pair_from_labels,
    pair_listed,
    read_split_file,
    reduce_zero_label,
    require_dir,
    resolve_root,
)
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

PC_TREE = """Expected tree (Pascal Context, VOC2010 + mmsegmentation's pascal_context.py):
  <root>/VOCdevkit/VOC2010/
      JPEGImages/<id>.jpg
      SegmentationClassContext/<id>.png          (uint8: 0 background, 1-59 classes)
      ImageSets/SegmentationContext/val.txt      (one <id> per line)"""

PC459_TREE = """Expected tree (Pascal Context 459, from prepare_pascal_context_459.py):
  <root>/VOCdevkit/VOC2010/
      JPEGImages/<id>.jpg
      annotations_detectron2/pc459_val/<id>.tif  (uint16: 0-458 classes, 65535 unlabelled)"""

CLASS_FILES = {60: "pc60.txt", 59: "pc59.txt", 459: "pc459.txt"}
PC459_IGNORE = 65535
LABEL_SUFFIXES_459 = (".tif", ".tiff", ".png")


@DATASETS.register(aliases=("pascal_context",))
class PascalContextDataset(LabelMapDataset):
    """Pascal Context samples (see the module docstring for the layouts and encodings).

    Args:
        root: the data root, ``VOCdevkit`` or ``VOCdevkit/VOC2010``.
        split: ``val`` (PC459: the ``pc459_<split>`` folder; only val is prepared).
        num_classes: 60, 59 or 459.
        class_file: class names in label order; default the packaged ``pc60.txt`` /
            ``pc59.txt`` / ``pc459.txt``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        num_classes: int = 60,
        class_file: str | os.PathLike | None = None,
    ) -> None:
        if num_classes not in CLASS_FILES:
            raise DatasetError(
                f"Pascal Context has 60 (with background), 59 (without) or 459 classes, "
                f"not {num_classes}."
            )
        tree = PC459_TREE if num_classes == 459 else PC_TREE
        self.dataset_dir = resolve_root(
            root,
            ("VOCdevkit/VOC2010", "VOC2010"),
            ("JPEGImages", "SegmentationClassContext", "annotations_detectron2"),
            "Pascal Context (VOC2010)",
            tree,
        )
        self.split = split
        self.reduce_zero_label = num_classes == 59
        image_dir = require_dir(self.dataset_dir / "JPEGImages", "the images", tree)
        if num_classes == 459:
            label_dir = require_dir(
                self.dataset_dir / "annotations_detectron2" / f"pc459_{split}",
                "the PC459 uint16 label TIFFs",
                tree,
            )
            labels = files_by_key(label_dir, LABEL_SUFFIXES_459)
            samples = pair_from_labels(labels, image_dir, ".jpg", label_dir, tree)
            ignore_index = PC459_IGNORE
        else:
            label_dir = require_dir(
                self.dataset_dir / "SegmentationClassContext",
                "the context label PNGs written by mmsegmentation's pascal_context.py",
                tree,
            )
            split_file = self.dataset_dir / "ImageSets" / "SegmentationContext" / f"{split}.txt"
            ids = read_split_file(split_file, tree)
            samples = pair_listed(ids, image_dir, ".jpg", label_dir, ".png", split_file, tree)
            ignore_index = 255
        classes = load_classes(
            class_file or CLASS_FILES[num_classes], num_classes, f"Pascal Context {num_classes}"
        )
        super().__init__(samples, classes, ignore_index=ignore_index)

    def decode_label(self, raw: np.ndarray) -> np.ndarray:
        if self.reduce_zero_label:
            return reduce_zero_label(raw, self.ignore_index)
        return raw.astype(np.int64)
