"""Reader for Pascal VOC 2012 semantic segmentation (VOC21 with background, VOC20 without).

Layout (as mmsegmentation prepares it; ``root`` may be the data root holding ``VOCdevkit``,
the ``VOCdevkit`` folder, or ``VOC2012`` itself)::

    VOCdevkit/VOC2012/
        JPEGImages/2007_000033.jpg ...
        SegmentationClass/2007_000033.png ...     palette PNGs: index 0 background, 1-20 the
                                                  classes, 255 the "void" object borders
        ImageSets/Segmentation/{train,val,trainval}.txt

Labels are the palette indices (colours are ignored). ``num_classes=21`` keeps them (255 is
ignored); ``num_classes=20`` is the "VOC20" benchmark: the mmseg ``reduce_zero_label`` rule
makes background ignored too and shifts the classes down (k -> k - 1), as the training-free OVSS
configs (SCLIP, NACLIP, ClearCLIP ``PascalVOC20Dataset``) do.
"""

from __future__ import annotations

import os

import numpy as np

from ovseg.data.layout import (
    LabelMapDataset,
    load_classes,
    pair_listed,
    read_split_file,
    reduce_zero_label,
    require_dir,
    resolve_root,
)
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

VOC_TREE = """Expected tree (Pascal VOC 2012, VOCtrainval_11-May-2012.tar):
  <root>/VOCdevkit/VOC2012/
      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png            (palette PNG: 0 background, 1-20 classes, 255 void)
      ImageSets/Segmentation/val.txt        (one <id> per line)"""

CLASS_FILES = {21: "voc21.txt", 20: "voc20.txt"}


@DATASETS.register(aliases=("pascal_voc",))
class PascalVOCDataset(LabelMapDataset):
    """Pascal VOC 2012 segmentation samples (see the module docstring for layout and labels).

    Args:
        root: the data root, ``VOCdevkit`` or ``VOCdevkit/VOC2012``.
        split: name of the split file in ``ImageSets/Segmentation`` (``val``, ``train``...).
        num_classes: 21 (background is class 0) or 20 (background ignored).
        class_file: class names in label order; default the packaged ``voc21.txt`` /
            ``voc20.txt`` (the reference prompt lists).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        num_classes: int = 21,
        class_file: str | os.PathLike | None = None,
    ) -> None:
        if num_classes not in CLASS_FILES:
            raise DatasetError(
                f"Pascal VOC has 21 classes (with background) or 20 (without), not {num_classes}."
            )
        self.dataset_dir = resolve_root(
            root,
            ("VOCdevkit/VOC2012", "VOC2012"),
            ("JPEGImages", "SegmentationClass", "ImageSets"),
            "Pascal VOC 2012",
            VOC_TREE,
        )
        self.split = split
        self.reduce_zero_label = num_classes == 20
        split_file = self.dataset_dir / "ImageSets" / "Segmentation" / f"{split}.txt"
        image_dir = require_dir(self.dataset_dir / "JPEGImages", "the images", VOC_TREE)
        label_dir = require_dir(
            self.dataset_dir / "SegmentationClass", "the class label PNGs", VOC_TREE
        )
        ids = read_split_file(split_file, VOC_TREE)
        samples = pair_listed(ids, image_dir, ".jpg", label_dir, ".png", split_file, VOC_TREE)
        classes = load_classes(
            class_file or CLASS_FILES[num_classes], num_classes, f"Pascal VOC {num_classes}"
        )
        super().__init__(samples, classes)

    def decode_label(self, raw: np.ndarray) -> np.ndarray:
        if self.reduce_zero_label:
            return reduce_zero_label(raw, self.ignore_index)
        return raw.astype(np.int64)
