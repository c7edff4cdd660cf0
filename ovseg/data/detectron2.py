"""detectron2-style dataset dicts (a JSON list) as ovseg datasets, without detectron2.

detectron2 describes a dataset as a list of dicts, one per image (its "standard dataset dicts")::

    {"file_name": "imgs/a.jpg", "height": 480, "width": 640, "image_id": 7,
     "sem_seg_file_name": "labels/a.png",                  # semantic segmentation
     "annotations": [                                       # instances
        {"bbox": [x0, y0, x1, y1], "bbox_mode": 0,          # BoxMode: 0 XYXY_ABS, 1 XYWH_ABS
         "segmentation": [[x, y, x, y, ...], ...] or {"size": [h, w], "counts": ...},
         "category_id": 3, "iscrowd": 0}, ...]}

``category_id`` is the contiguous class index in ``[0, C)`` (as detectron2's dataset loaders
leave it), and ``sem_seg_file_name`` a label PNG of class indices with 255 (detectron2's usual
``ignore_label``) where nothing is evaluated. Class names are not part of the dicts (detectron2
keeps them in its ``MetadataCatalog``), so the readers take ``classes`` or ``class_file``.
Relative paths are taken from ``image_root`` (default: the JSON file's folder).

:class:`Detectron2SemSegDataset` reads the semantic form (samples as every
``LabelMapDataset``), :class:`Detectron2InstanceDataset` the instance form (samples and the
``coco`` ground truth as :class:`~ovseg.data.coco_instances.COCOInstances`, category ids kept
as detectron2's contiguous ids). Boxes in relative (2, 3) or rotated (4) modes are refused, as
are annotations without a segmentation (the instance task scores masks).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ovseg.data.coco_instances import COCOInstances, validate_coco_instances
from ovseg.data.layout import IGNORE_INDEX, LabelMapDataset, load_classes
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

XYXY_ABS, XYWH_ABS = 0, 1
BOX_MODE_NAMES = {0: "XYXY_ABS", 1: "XYWH_ABS", 2: "XYXY_REL", 3: "XYWH_REL", 4: "XYWHA_ABS"}


def load_dataset_dicts(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The dicts of a detectron2 dataset JSON, each checked to have ``file_name`` (str) and,
    where given, integer ``height`` / ``width``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"Dataset dicts file {path} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"Cannot read {path} as JSON ({exc}).") from exc
    if not isinstance(data, list) or not data:
        raise DatasetError(
            f"{path} must hold a non-empty JSON list of detectron2 dataset dicts (one per image, "
            "with file_name, height, width, image_id ...)."
        )
    for index, record in enumerate(data):
        if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
            raise DatasetError(f"{path}: entry {index} is not a dict with a 'file_name' string.")
        for key in ("height", "width"):
            value = record.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise DatasetError(f"{path}: entry {index} has a non-integer {key!r}: {value!r}.")
    return data


def resolve_path(name: str, image_root: Path) -> Path:
    """``name`` as a path: absolute ones as they are, relative ones under ``image_root``."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else image_root / path


def _root(json_file: Path, image_root: str | os.PathLike | None) -> Path:
    return Path(image_root).expanduser() if image_root is not None else json_file.parent


def _classes(
    classes: Sequence[str] | None, class_file: str | os.PathLike | None, source: str
) -> list[tuple[str, ...]]:
    if (classes is None) == (class_file is None):
        raise DatasetError(
            f"{source}: give the class names in label order as classes=[...] or class_file=... "
            "(detectron2 keeps them in MetadataCatalog, not in the dataset dicts)."
        )
    if classes is not None:
        return [(str(name),) for name in classes]
    return load_classes(class_file, None, source)


def xywh_box(box: Any, mode: Any, where: str) -> list[float]:
    """A detectron2 box in ``mode`` (``XYXY_ABS`` or ``XYWH_ABS``) as COCO's ``[x, y, w, h]``."""
    if (
        not isinstance(box, (list, tuple))
        or len(box) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    ):
        raise DatasetError(f"{where}: 'bbox' must be 4 numbers, got {box!r}.")
    x0, y0, a, b = (float(v) for v in box)
    if mode == XYXY_ABS:
        return [x0, y0, a - x0, b - y0]
    if mode == XYWH_ABS:
        return [x0, y0, a, b]
    name = BOX_MODE_NAMES.get(mode, "unknown")
    raise DatasetError(
        f"{where}: bbox_mode {mode!r} ({name}) is not supported; use 0 (XYXY_ABS) or 1 "
        "(XYWH_ABS) absolute pixel boxes, as detectron2's own loaders write them."
    )


def dataset_dicts_to_coco(
    dicts: Sequence[dict[str, Any]], class_names: Sequence[str], source: str
) -> dict[str, Any]:
    """A COCO instances document of instance-form dataset dicts (category ids = class indices)."""
    images, annotations = [], []
    for index, record in enumerate(dicts):
        where = f"{source}: entry {index} ({record['file_name']})"
        image_id = record.get("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise DatasetError(f"{where}: 'image_id' must be an integer, got {image_id!r}.")
        if record.get("height") is None or record.get("width") is None:
            raise DatasetError(f"{where}: 'height' and 'width' are needed for instances.")
        images.append(
            {"id": image_id, "file_name": record["file_name"], "height": record["height"],
             "width": record["width"]}
        )  # fmt: skip
        anns = record.get("annotations", [])
        if not isinstance(anns, list):
            raise DatasetError(f"{where}: 'annotations' must be a list.")
        for number, ann in enumerate(anns):
            at = f"{where}, annotation {number}"
            if not isinstance(ann, dict):
                raise DatasetError(f"{at} is not a dict.")
            category = ann.get("category_id")
            if isinstance(category, bool) or not isinstance(category, int):
                raise DatasetError(f"{at}: 'category_id' must be an integer.")
            if not 0 <= category < len(class_names):
                raise DatasetError(
                    f"{at}: category_id {category} is outside [0, {len(class_names)}) of the "
                    "given classes (detectron2 dicts hold contiguous class indices)."
                )
            if "segmentation" not in ann:
                raise DatasetError(
                    f"{at} has no 'segmentation'; ovseg's instance evaluation scores masks, so "
                    "every annotation needs polygons or an RLE."
                )
            segmentation = ann["segmentation"]
            if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), bytes):
                segmentation = {**segmentation, "counts": segmentation["counts"].decode()}
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": xywh_box(ann.get("bbox"), ann.get("bbox_mode"), at),
                    "segmentation": segmentation,
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
            )
    categories = [{"id": i, "name": name} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


@DATASETS.register(aliases=("detectron2_sem_seg",))
class Detectron2SemSegDataset(LabelMapDataset):
    """Semantic samples of detectron2 dataset dicts: ``file_name`` + ``sem_seg_file_name``.

    Args:
        json_file: the JSON list of dataset dicts.
        classes / class_file: class names in label order (one of the two).
        image_root: folder of relative paths (default: the JSON file's folder).
        ignore_index: the label value that is not evaluated (detectron2's ``ignore_label``).
    """

    def __init__(
        self,
        json_file: str | os.PathLike,
        classes: Sequence[str] | None = None,
        class_file: str | os.PathLike | None = None,
        image_root: str | os.PathLike | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.json_file = Path(json_file).expanduser()
        dicts = load_dataset_dicts(self.json_file)
        root = _root(self.json_file, image_root)
        samples, missing = [], []
        for index, record in enumerate(dicts):
            label = record.get("sem_seg_file_name")
            if not isinstance(label, str):
                raise DatasetError(
                    f"{self.json_file}: entry {index} ({record['file_name']}) has no "
                    "'sem_seg_file_name'; semantic evaluation needs a label PNG per image."
                )
            image_path, label_path = (
                resolve_path(record["file_name"], root),
                resolve_path(label, root),
            )
            missing += [str(p) for p in (image_path, label_path) if not p.is_file()]
            samples.append((image_path, label_path))
        if missing:
            raise DatasetError(
                f"{len(missing)} files named in {self.json_file} do not exist (relative paths are "
                f"taken under {root}): {', '.join(missing[:5])}."
            )
        super().__init__(samples, _classes(classes, class_file, str(self.json_file)), ignore_index)


@DATASETS.register(aliases=("detectron2_instances",))
class Detectron2InstanceDataset(COCOInstances):
    """Instance samples of detectron2 dataset dicts, read as :class:`COCOInstances` reads COCO.

    Args:
        json_file: the JSON list of dataset dicts (with ``image_id`` and ``annotations``).
        classes / class_file: class names in label order (one of the two).
        image_root: folder of relative ``file_name``s (default: the JSON file's folder).
    """

    def __init__(
        self,
        json_file: str | os.PathLike,
        classes: Sequence[str] | None = None,
        class_file: str | os.PathLike | None = None,
        image_root: str | os.PathLike | None = None,
    ) -> None:
        self.ann_file = Path(json_file).expanduser()
        dicts = load_dataset_dicts(self.ann_file)
        names = [n[0] for n in _classes(classes, class_file, str(self.ann_file))]
        document = dataset_dicts_to_coco(dicts, names, str(self.ann_file))
        self.img_dir = _root(self.ann_file, image_root)
        checked = validate_coco_instances(document, str(self.ann_file))
        self.dropped_polygons = checked.dropped_polygons
        self.dropped_annotation_ids = checked.dropped_annotation_ids
        self.coco = checked.to_coco()
        self.categories = dict(enumerate(names))
        self.category_ids = list(range(len(names)))
        self.class_names = names
        self._label_of = {cid: cid for cid in self.category_ids}
        self.image_ids = sorted(self.coco.imgs)
        self._check_image_files()
