"""Reader for COCO-Stuff-164k (171 classes: 80 things + 91 stuff).

Layout (mmsegmentation's ``coco_stuff164k`` convention; ``root`` may be the data root holding
``coco_stuff164k`` or that folder)::

    coco_stuff164k/
        images/{train2017,val2017}/000000000139.jpg ...        (COCO 2017 images)
        annotations/{train2017,val2017}/
            000000000139.png                 raw stuffthingmaps: 0-181 = COCO category id - 1
                                             (11 unused thing ids), 255 unlabelled
            000000000139_labelTrainIds.png   written by mmseg's coco_stuff164k.py: 0-170 in the
                                             order of stuff.txt, 255 unlabelled

``label_format="trainids"`` reads the ``_labelTrainIds.png`` files; ``"stuffthingmaps"`` the
raw maps, mapped to the same 171 indices at read time with the converter's table (the used raw
ids in increasing order become 0..170); ``"auto"`` (default) picks ``trainids`` when the split's
folder holds any ``_labelTrainIds.png``. Both give identical labels for the same image.
"""

from __future__ import annotations

import os

import numpy as np

from ovseg.data.layout import (
    LabelMapDataset,
    files_by_key,
    layout_error,
    load_classes,
    lookup_table,
    pair_files,
    require_choice,
    require_dir,
    resolve_root,
)
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

# Raw stuffthingmaps values never used: COCO category ids 12, 26, 29, 30, 45, 66, 68, 69, 71,
# 83 and 91 (minus one) have no objects.
UNUSED_RAW_IDS = frozenset({11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90})
#: Raw stuffthingmaps ids (COCO category id - 1) in label order: position = COCO-Stuff-171 index.
RAW_IDS = tuple(i for i in range(182) if i not in UNUSED_RAW_IDS)
#: COCO category ids of the 80 thing classes, in label order (``instances_*.json`` ids).
THING_CATEGORY_IDS = tuple(i + 1 for i in RAW_IDS if i <= 90)
IGNORE_INDEX = 255
TRAINIDS_SUFFIX = "_labelTrainIds.png"
# converter outputs that may sit beside the raw maps (COCO-Object writes into the same folder)
DERIVED_SUFFIXES = ("_labelTrainIds.png", "_instanceTrainIds.png")

SPLITS = {"val": "val2017", "val2017": "val2017", "train": "train2017", "train2017": "train2017"}

STUFF_TREE = """Expected tree (COCO-Stuff-164k, as mmsegmentation's coco_stuff164k.py leaves it):
  <root>/coco_stuff164k/
      images/val2017/<id>.jpg                       (COCO val2017 images)
      annotations/val2017/<id>_labelTrainIds.png    (0-170, 255 unlabelled)
        or annotations/val2017/<id>.png             (raw stuffthingmaps_trainval2017: 0-181)"""

LABEL_FORMATS = ("auto", "trainids", "stuffthingmaps")


def stuff_raw_to_train() -> np.ndarray:
    """(256,) int64 table: raw stuffthingmaps value -> COCO-Stuff-171 index (255 when unused)."""
    return lookup_table({raw: i for i, raw in enumerate(RAW_IDS)}, 256, IGNORE_INDEX)


def resolve_coco_split(split: str) -> str:
    """``val``/``val2017`` -> ``val2017``; ``train``/``train2017`` -> ``train2017``."""
    if split not in SPLITS:
        raise DatasetError(f"COCO split must be 'val2017' or 'train2017', got {split!r}.")
    return SPLITS[split]


@DATASETS.register(aliases=("coco_stuff", "coco_stuff164k"))
class COCOStuffDataset(LabelMapDataset):
    """COCO-Stuff-164k samples, 171 classes (see the module docstring for layout and labels).

    Args:
        root: the data root or the ``coco_stuff164k`` folder.
        split: ``val2017`` (or ``val``) / ``train2017``.
        label_format: ``auto``, ``trainids`` or ``stuffthingmaps``.
        class_file: class names in label order; default the packaged ``stuff.txt``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val2017",
        label_format: str = "auto",
        class_file: str | os.PathLike | None = None,
    ) -> None:
        require_choice("label_format", label_format, LABEL_FORMATS)
        self.dataset_dir = resolve_root(
            root, ("coco_stuff164k",), ("images", "annotations"), "COCO-Stuff-164k", STUFF_TREE
        )
        self.split = resolve_coco_split(split)
        image_dir = require_dir(
            self.dataset_dir / "images" / self.split, "the COCO images", STUFF_TREE
        )
        label_dir = require_dir(
            self.dataset_dir / "annotations" / self.split, "the label PNGs", STUFF_TREE
        )
        trainids = files_by_key(label_dir, TRAINIDS_SUFFIX)
        if label_format == "auto":
            label_format = "trainids" if trainids else "stuffthingmaps"
        self.label_format = label_format
        if label_format == "trainids":
            labels, pattern = trainids, f"<id>{TRAINIDS_SUFFIX}"
        else:
            labels, pattern = files_by_key(label_dir, ".png", exclude=DERIVED_SUFFIXES), "<id>.png"
        if not labels:
            raise layout_error(f"{label_dir} holds no {pattern} labels.", STUFF_TREE)
        images = files_by_key(image_dir, (".jpg", ".jpeg", ".png"))
        samples = pair_files(images, labels, image_dir, label_dir, pattern, STUFF_TREE)
        self._raw_to_train = stuff_raw_to_train()
        classes = load_classes(class_file or "stuff.txt", len(RAW_IDS), "COCO-Stuff-164k")
        super().__init__(samples, classes)

    def decode_label(self, raw: np.ndarray) -> np.ndarray:
        if self.label_format == "trainids":
            return raw.astype(np.int64)
        return self._raw_to_train[np.clip(raw, 0, 255)]
