"""Reader for LVIS v1 (``lvis_v1_val.json`` as released), for detection / instance evaluation.

Layout (as detectron2 expects it)::

    <coco_root>/train2017/000000xxxxxx.jpg, <coco_root>/val2017/...   (the COCO 2017 images)
    <ann_file>                                                        lvis_v1_val.json

LVIS v1 images carry no ``file_name`` but a ``coco_url``
(``http://images.cocodataset.org/val2017/000000397133.jpg``); the image is its last two path
parts under ``coco_root`` (LVIS val draws from COCO's train and val images). A ``file_name``,
where present (LVIS v0.5), is used instead. Categories carry ``name`` (``aerosol_can``),
``synonyms`` and ``frequency`` (``r``, ``c``, ``f``); images ``neg_category_ids`` and
``not_exhaustive_category_ids``, which the official evaluation (the ``lvis`` package) reads.

Class names are the category names with ``_`` read as a space (``aerosol can``); with
``synonyms=True`` each class also queries its synonyms (``aerosol can``, ``spray can``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ovseg.data.coco_instances import annotation_instances
from ovseg.errors import DatasetError
from ovseg.io import read_image
from ovseg.registry import DATASETS

__all__ = ["LVISInstances", "lvis_class_names"]

LAYOUT = """Expected (see datasets/README.md):
  ann_file: lvis_v1_val.json (LVIS v1 release)
  coco_root/train2017/*.jpg and coco_root/val2017/*.jpg (COCO 2017 images)"""


def _display(name: str) -> str:
    return name.replace("_", " ").strip()


def lvis_class_names(
    categories: list[dict[str, Any]], synonyms: bool = False
) -> list[str | tuple[str, ...]]:
    """One entry per category (in the given order): its display name, or with ``synonyms`` the
    tuple (display name, other synonyms), duplicates removed."""
    names: list[str | tuple[str, ...]] = []
    for category in categories:
        display = _display(str(category["name"]))
        if not synonyms:
            names.append(display)
            continue
        extra = [_display(str(s)) for s in category.get("synonyms", [])]
        names.append(tuple(dict.fromkeys([display, *extra])))
    return names


def _image_path(root: Path, info: dict[str, Any]) -> Path:
    if info.get("file_name"):
        return root / str(info["file_name"])
    url = str(info.get("coco_url", ""))
    parts = url.rstrip("/").split("/")
    if len(parts) < 2:
        raise DatasetError(f"LVIS image {info.get('id')} has neither file_name nor coco_url.")
    return root / parts[-2] / parts[-1]


@DATASETS.register(aliases=("lvis",))
class LVISInstances:
    """LVIS images with instance masks and boxes (see the module docstring).

    Args:
        ann_file: the LVIS JSON (``lvis_v1_val.json``).
        coco_root: the folder holding COCO's ``train2017/`` and ``val2017/``.
        synonyms: query the category synonyms too.

    ``__getitem__(i)``: ``{"image", "image_id", "image_path", "instances": {"masks" (N, H, W)
    bool, "boxes" (N, 4) float32 XYXY, "category_ids", "labels"}}`` (annotation-id order);
    images in id order. Attributes: ``ann_file``, ``category_ids`` (sorted), ``class_names``
    (display names), ``vocabulary`` (names or synonym tuples), ``image_ids``, ``frequency``
    (category id -> r/c/f).
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        coco_root: str | os.PathLike,
        synonyms: bool = False,
    ) -> None:
        self.ann_file = Path(ann_file).expanduser()
        self.root = Path(coco_root).expanduser()
        if not self.ann_file.is_file():
            raise DatasetError(f"LVIS annotation file {self.ann_file} does not exist.\n{LAYOUT}")
        if not self.root.is_dir():
            raise DatasetError(f"COCO image folder {self.root} does not exist.\n{LAYOUT}")
        try:
            data = json.loads(self.ann_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{self.ann_file} is not valid JSON ({exc}).") from exc
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DatasetError(f"{self.ann_file} has no '{key}' list; is it an LVIS file?")
        categories = sorted(data["categories"], key=lambda c: int(c["id"]))
        missing_frequency = [
            c["id"] for c in categories if c.get("frequency") not in ("r", "c", "f")
        ]
        if missing_frequency:
            raise DatasetError(
                f"Categories {missing_frequency[:5]} of {self.ann_file} have no frequency "
                "r/c/f; use the LVIS release JSON."
            )
        self.category_ids = [int(c["id"]) for c in categories]
        self.class_names = [_display(str(c["name"])) for c in categories]
        self.vocabulary = lvis_class_names(categories, synonyms)
        self.frequency = {int(c["id"]): str(c["frequency"]) for c in categories}
        self._label_of = {cid: index for index, cid in enumerate(self.category_ids)}
        self.images = {int(im["id"]): im for im in data["images"]}
        self.image_ids = sorted(self.images)
        self._anns: dict[int, list[dict[str, Any]]] = {i: [] for i in self.image_ids}
        for ann in data["annotations"]:
            if (
                int(ann["image_id"]) not in self._anns
                or int(ann["category_id"]) not in self._label_of
            ):
                raise DatasetError(
                    f"Annotation {ann.get('id')} of {self.ann_file} names an unknown image or "
                    "category."
                )
            self._anns[int(ann["image_id"])].append(ann)
        absent = [i for i in self.image_ids if not _image_path(self.root, self.images[i]).is_file()]
        if absent:
            example = _image_path(self.root, self.images[absent[0]])
            raise DatasetError(
                f"{len(absent)} of {len(self.image_ids)} LVIS images are not under {self.root} "
                f"(e.g. {example}).\n{LAYOUT}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        info = self.images[image_id]
        path = _image_path(self.root, info)
        image = read_image(path)
        height, width = int(info["height"]), int(info["width"])
        if image.shape[:2] != (height, width):
            raise DatasetError(
                f"Image {path} is {image.shape[1]}x{image.shape[0]} but {self.ann_file} says "
                f"{width}x{height}."
            )
        anns = sorted(self._anns[image_id], key=lambda a: a["id"])
        return {
            "image": image,
            "image_id": int(image_id),
            "image_path": str(path),
            "instances": annotation_instances(anns, height, width, self._label_of),
        }
