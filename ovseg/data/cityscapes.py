"""Reader for Cityscapes semantic segmentation (19 evaluation classes).

Layout (as the official packages unpack, with the trainId labels written by cityscapesScripts'
``createTrainIdLabelImgs`` or mmsegmentation's ``cityscapes.py``; ``root`` may be the data root
holding ``cityscapes`` or that folder)::

    cityscapes/
        leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
        gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png
                                    0-18 the classes of city.txt, 255 ignored
                                   (and/or ..._gtFine_labelIds.png: the 34 raw label ids)

``label_type="trainids"`` reads the ``labelTrainIds`` files; ``"labelids"`` reads the raw
``labelIds`` and maps them with the official trainId table (the other ids -> 255);
``"auto"`` (default) uses ``trainids`` when the split holds any ``labelTrainIds`` file.
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
from ovseg.registry import DATASETS

IMAGE_SUFFIX = "_leftImg8bit.png"
TRAINIDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABELIDS_SUFFIX = "_gtFine_labelIds.png"
#: Cityscapes label id -> trainId of the 19 evaluated classes (cityscapesScripts labels.py).
LABEL_ID_TO_TRAIN_ID = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
LABEL_TYPES = ("auto", "trainids", "labelids")

CITY_TREE = """Expected tree (Cityscapes: leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip):
  <root>/cityscapes/
      leftImg8bit/val/<city>/<city>_<seq>_<frame>_leftImg8bit.png
      gtFine/val/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (0-18, 255 ignored)
        or .../<city>_<seq>_<frame>_gtFine_labelIds.png                 (raw ids, mapped on read)"""


@DATASETS.register(aliases=("cityscapes",))
class CityscapesDataset(LabelMapDataset):
    """Cityscapes samples, 19 classes (see the module docstring for layout and labels).

    Args:
        root: the data root or the ``cityscapes`` folder.
        split: ``val`` / ``train`` / ``test`` (a folder of ``leftImg8bit`` and ``gtFine``).
        label_type: ``auto``, ``trainids`` or ``labelids``.
        class_file: class names in trainId order; default the packaged ``city.txt``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        label_type: str = "auto",
        class_file: str | os.PathLike | None = None,
    ) -> None:
        require_choice("label_type", label_type, LABEL_TYPES)
        self.dataset_dir = resolve_root(
            root, ("cityscapes",), ("leftImg8bit", "gtFine"), "Cityscapes", CITY_TREE
        )
        self.split = split
        image_dir = require_dir(
            self.dataset_dir / "leftImg8bit" / split, "the left 8-bit images", CITY_TREE
        )
        label_dir = require_dir(self.dataset_dir / "gtFine" / split, "the fine labels", CITY_TREE)
        trainids = files_by_key(label_dir, TRAINIDS_SUFFIX, recursive=True)
        if label_type == "auto":
            label_type = "trainids" if trainids else "labelids"
        self.label_type = label_type
        if label_type == "trainids":
            labels, suffix = trainids, TRAINIDS_SUFFIX
        else:
            labels, suffix = (
                files_by_key(label_dir, LABELIDS_SUFFIX, recursive=True),
                LABELIDS_SUFFIX,
            )
        if not labels:
            raise layout_error(f"{label_dir} holds no <city>/<name>{suffix} labels.", CITY_TREE)
        images = files_by_key(image_dir, IMAGE_SUFFIX, recursive=True)
        samples = pair_files(
            images, labels, image_dir, label_dir, f"<city>/<name>{suffix}", CITY_TREE
        )
        self._label_to_train = lookup_table(LABEL_ID_TO_TRAIN_ID, 256, 255)
        classes = load_classes(class_file or "city.txt", 19, "Cityscapes")
        super().__init__(samples, classes)

    def decode_label(self, raw: np.ndarray) -> np.ndarray:
        if self.label_type == "trainids":
            return raw.astype(np.int64)
        return self._label_to_train[np.clip(raw, 0, 255)]
