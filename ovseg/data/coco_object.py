"""Reader for COCO-Object: the 80 COCO thing classes plus background (index 0), 81 classes.

The benchmark (GroupViT / TCL / SCLIP / NACLIP ``COCOObjectDataset``) is derived from
COCO-Stuff-164k by the ``cvt_coco_object.py`` converter those repositories ship: raw
stuffthingmaps value ``k`` (COCO category id - 1) of a thing becomes its thing index + 1
(1-80, in the order of ``object.txt``); every stuff value and the unlabelled 255 become 0
(background), so no pixel is ignored. Three label sources give the same classes::

    <root>/ (coco_stuff164k, or the converter's output folder)
        images/val2017/<id>.jpg
        annotations/val2017/<id>_instanceTrainIds.png   source "instance_trainids": the
                                                        converter's output (the reference)
        annotations/val2017/<id>.png                    source "stuffthingmaps": the raw maps,
                                                        converted at read time with the same rule
        annotations/instances_val2017.json              source "instances": COCO instances,
                                                        rasterised with pycocotools (below)

``source="auto"`` (default) takes the first of these the folder holds. With ``instances`` the
label starts as background and every annotation of the image (crowd regions included) is
painted with its class, largest area first so smaller objects stay visible on top; images come
from ``images/<split>`` or ``<split>`` (the plain COCO layout). This approximates the
stuffthingmaps (made from the same polygons); published numbers use the converter's PNGs.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.data.coco_stuff import RAW_IDS, THING_CATEGORY_IDS, resolve_coco_split
from ovseg.data.layout import (
    LabelMapDataset,
    files_by_key,
    layout_error,
    load_classes,
    lookup_table,
    pair_files,
    require_choice,
    require_file,
    resolve_root,
    shown,
)
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

BACKGROUND = 0
INSTANCE_TRAINIDS_SUFFIX = "_instanceTrainIds.png"
DERIVED_SUFFIXES = ("_labelTrainIds.png", "_instanceTrainIds.png")
SOURCES = ("auto", "instance_trainids", "stuffthingmaps", "instances")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

OBJECT_TREE = """Expected tree (COCO-Object, from COCO-Stuff-164k with cvt_coco_object.py):
  <root>/coco_stuff164k/            (or the converter's -o folder, e.g. <root>/coco_object)
      images/val2017/<id>.jpg
      annotations/val2017/<id>_instanceTrainIds.png   (0 background, 1-80 things)
        or annotations/val2017/<id>.png               (raw stuffthingmaps, converted on read)
        or annotations/instances_val2017.json         (COCO instances, rasterised on read)"""


def stuff_raw_to_object() -> np.ndarray:
    """(256,) int64 table: raw stuffthingmaps value -> COCO-Object index (0 background).

    Things (raw id <= 90) -> thing index + 1; stuff and 255 -> 0, as the converter does. Raw
    ids that COCO never uses (e.g. 11) -> 255 (ignored; they do not occur in the real maps).
    """
    mapping = {raw: BACKGROUND for raw in range(256)}
    for raw in range(91):
        mapping[raw] = 255
    for index, raw in enumerate(r for r in RAW_IDS if r <= 90):
        mapping[raw] = index + 1
    return lookup_table(mapping, 256, BACKGROUND)


def category_to_object_index() -> dict[int, int]:
    """COCO category id (instances JSON) -> COCO-Object index 1-80."""
    return {cat: i + 1 for i, cat in enumerate(THING_CATEGORY_IDS)}


@DATASETS.register(aliases=("coco_object",))
class COCOObjectDataset(LabelMapDataset):
    """COCO-Object samples, 81 classes with background 0 (see the module docstring).

    Args:
        root: the data root, ``coco_stuff164k`` (or the folder the converter wrote), or a COCO
            folder with ``annotations/instances_<split>.json``.
        split: ``val2017`` (or ``val``) / ``train2017``.
        source: ``auto``, ``instance_trainids``, ``stuffthingmaps`` or ``instances``.
        ann_file: the instances JSON for ``source="instances"`` (default
            ``<root>/annotations/instances_<split>.json``).
        class_file: class names in label order; default the packaged ``object.txt``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val2017",
        source: str = "auto",
        ann_file: str | os.PathLike | None = None,
        class_file: str | os.PathLike | None = None,
    ) -> None:
        require_choice("source", source, SOURCES)
        self.dataset_dir = resolve_root(
            root,
            ("coco_object", "coco_stuff164k"),
            ("images", "annotations"),
            "COCO-Object",
            OBJECT_TREE,
        )
        self.split = resolve_coco_split(split)
        self.ann_file = (
            Path(ann_file)
            if ann_file
            else self.dataset_dir / "annotations" / f"instances_{self.split}.json"
        )
        label_dir = self.dataset_dir / "annotations" / self.split
        self.source = self._pick_source(source, label_dir)
        if self.source == "instances":
            samples = self._instance_samples()
        else:
            samples = self._png_samples(label_dir)
        self._raw_to_object = stuff_raw_to_object()
        classes = load_classes(class_file or "object.txt", 81, "COCO-Object")
        super().__init__(samples, classes)

    def _pick_source(self, source: str, label_dir: Path) -> str:
        if source != "auto":
            return source
        if label_dir.is_dir():
            if files_by_key(label_dir, INSTANCE_TRAINIDS_SUFFIX):
                return "instance_trainids"
            if files_by_key(label_dir, ".png", exclude=DERIVED_SUFFIXES):
                return "stuffthingmaps"
        if self.ann_file.is_file():
            return "instances"
        raise layout_error(
            f"{self.dataset_dir} holds no COCO-Object labels: no <id>_instanceTrainIds.png or "
            f"raw <id>.png in {label_dir}, and no {self.ann_file}.",
            OBJECT_TREE,
        )

    def _png_samples(self, label_dir: Path) -> list[tuple[Path, Any]]:
        image_dir = self.dataset_dir / "images" / self.split
        for folder, what in ((image_dir, "the COCO images"), (label_dir, "the label PNGs")):
            if not folder.is_dir():
                raise layout_error(f"Missing folder {folder} ({what}).", OBJECT_TREE)
        if self.source == "instance_trainids":
            labels = files_by_key(label_dir, INSTANCE_TRAINIDS_SUFFIX)
            pattern = f"<id>{INSTANCE_TRAINIDS_SUFFIX}"
        else:
            labels = files_by_key(label_dir, ".png", exclude=DERIVED_SUFFIXES)
            pattern = "<id>.png"
        if not labels:
            raise layout_error(f"{label_dir} holds no {pattern} labels.", OBJECT_TREE)
        images = files_by_key(image_dir, IMAGE_SUFFIXES)
        return pair_files(images, labels, image_dir, label_dir, pattern, OBJECT_TREE)

    def _instance_samples(self) -> list[tuple[Path, Any]]:
        try:
            from pycocotools.coco import COCO
        except ImportError as exc:  # pragma: no cover - pycocotools is a core dependency
            raise DatasetError(
                "Reading COCO instances needs pycocotools; pip install pycocotools."
            ) from exc
        require_file(self.ann_file, "COCO instances annotations", OBJECT_TREE)
        image_dir = self.dataset_dir / "images" / self.split
        if not image_dir.is_dir():
            image_dir = self.dataset_dir / self.split
        if not image_dir.is_dir():
            raise layout_error(
                f"Missing folder {self.dataset_dir / 'images' / self.split} (or "
                f"{self.dataset_dir / self.split}) with the images of {self.ann_file.name}.",
                OBJECT_TREE,
            )
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                self.coco = COCO(str(self.ann_file))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"Cannot read {self.ann_file} as COCO instances ({exc}); re-download it."
            ) from exc
        self._category_index = category_to_object_index()
        unknown = sorted(set(self.coco.getCatIds()) - set(self._category_index))
        if unknown:
            raise DatasetError(
                f"{self.ann_file} has category ids {shown(unknown)} that are not among the 80 "
                "COCO thing categories; COCO-Object needs the official instances file."
            )
        by_name = {img["file_name"]: img["id"] for img in self.coco.dataset.get("images", [])}
        listed = {Path(name).stem: image_dir / name for name in by_name}
        on_disk = files_by_key(image_dir, IMAGE_SUFFIXES)
        missing = sorted(k for k, path in listed.items() if not path.is_file())
        if missing:
            raise layout_error(
                f"{len(missing)} of the {len(listed)} images of {self.ann_file} are not in "
                f"{image_dir}: {shown(missing)}.",
                OBJECT_TREE,
            )
        extra = sorted(k for k in on_disk if k not in listed)
        if extra:
            raise layout_error(
                f"{len(extra)} images in {image_dir} are not in {self.ann_file}: {shown(extra)}. "
                "Remove them or use the instances file of this split.",
                OBJECT_TREE,
            )
        return [(listed[k], by_name[listed[k].name]) for k in sorted(listed)]

    def read_label(self, source: Any) -> np.ndarray:
        if self.source != "instances":
            return super().read_label(source)
        info = self.coco.imgs[source]
        label = np.full((int(info["height"]), int(info["width"])), BACKGROUND, dtype=np.int64)
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[source]))
        for ann in sorted(anns, key=lambda a: -float(a.get("area", 0.0))):
            with warnings.catch_warnings():
                # pycocotools' decoder trips numpy 2's __array__(copy=...) deprecation notice
                warnings.simplefilter("ignore", DeprecationWarning)
                mask = self.coco.annToMask(ann).astype(bool)
            label[mask] = self._category_index[ann["category_id"]]
        return label

    def describe_label(self, source: Any) -> str:
        if self.source == "instances":
            return f"{self.ann_file} (image_id {source})"
        return str(source)

    def decode_label(self, raw: np.ndarray) -> np.ndarray:
        if self.source == "stuffthingmaps":
            return self._raw_to_object[np.clip(raw, 0, 255)]
        return raw.astype(np.int64)
