"""Predictions in the files detectron2's evaluators write, without detectron2.

* ``sem_seg_predictions.json`` (``SemSegEvaluator``): a list with one entry per image and class
  present, ``{"file_name": the image's path, "category_id": class index (or the dataset id of
  ``category_ids``), "segmentation": compressed RLE {"size": [H, W], "counts": str}}``, the mask
  encoded by pycocotools from an ``(H, W, 1)`` Fortran-order uint8 array, as detectron2 does.
  Pixels ovseg leaves unlabelled (255) belong to no entry (detectron2's argmax labels every pixel).
* ``coco_instances_results.json`` (``COCOEvaluator``): COCO results, ``{"image_id",
  "category_id", "bbox": [x, y, w, h] (from the XYXY box), "score", "segmentation": RLE}``.

:class:`Detectron2Exporter` (``ovseg predict --export detectron2``) writes whichever of the two
its results call for, plus ``dataset_dicts.json`` (detectron2 dataset dicts ``file_name``,
``height``, ``width``, ``image_id`` of the exported images, so results pair with their images)
and ``metadata.json`` (the class names as ``thing_classes`` / ``stuff_classes``). Image ids are
those of the input dataset dicts when the input was such a file, else 1..N in key order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ovseg.evaluation.coco import instances_to_coco_results, masks_to_rles
from ovseg.export.base import write_json_record
from ovseg.export.coco import RegionRecordExporter, encode_regions
from ovseg.fileio import atomic_write_json
from ovseg.structures import UNLABELLED, Instances, OVSegResult

SEM_SEG_NAME = "sem_seg_predictions.json"
INSTANCES_NAME = "coco_instances_results.json"
DICTS_NAME = "dataset_dicts.json"
METADATA_NAME = "metadata.json"


def sem_seg_to_detectron2_json(
    sem_seg: np.ndarray, file_name: str, category_ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """``SemSegEvaluator``'s entries for one ``(H, W)`` label map (one per class present, in
    label order); ``category_ids[label]`` replaces the label when given."""
    sem_seg = np.asarray(sem_seg)
    labels = [int(v) for v in np.unique(sem_seg) if v != UNLABELLED]
    if not labels:
        return []
    rles = masks_to_rles(np.stack([sem_seg == label for label in labels]))
    return [
        {
            "file_name": file_name,
            "category_id": int(category_ids[label]) if category_ids is not None else label,
            "segmentation": rle,
        }
        for label, rle in zip(labels, rles, strict=True)
    ]


def instances_to_detectron2_json(
    instances: Instances, image_id: int, category_ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """``COCOEvaluator``'s result entries for one image (class indices as category ids unless
    ``category_ids`` maps them)."""
    ids = (
        list(category_ids) if category_ids is not None else list(range(len(instances.class_names)))
    )
    return instances_to_coco_results(instances, image_id, ids)


class Detectron2Exporter(RegionRecordExporter):
    """Writes detectron2's result files from per-image records; see the module docstring.

    ``image_ids`` (image path relative to the input -> id) keeps a dataset's own ids.
    """

    name = "detectron2"

    def __init__(self, *args: Any, image_ids: Mapping[str, int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.image_ids = dict(image_ids or {})
        self._pending: dict[str, Any] = {}

    def add(self, image_path_rel: str, image_size, result: Any, *, key: str | None = None) -> None:
        if isinstance(result, Instances):
            kept = [i for i, mask in enumerate(result.masks) if mask.any()]  # as regions_of
            self._pending = {"kind": "instances", "boxes": result.boxes[kept].tolist()}
        else:
            kind = "sem_seg" if isinstance(result, OVSegResult) else "regions"
            self._pending = {"kind": kind, "boxes": None}
        super().add(image_path_rel, image_size, result, key=key)

    def _add(self, key, image_path_rel, image_size, regions) -> None:
        record = {
            "image": image_path_rel,
            "height": image_size[0],
            "width": image_size[1],
            "regions": encode_regions(regions),
            **self._pending,
        }
        write_json_record(self.record_path(key), record)

    def _file_name(self, image_path_rel: str) -> str:
        return str(self.source_root / image_path_rel) if self.source_root else image_path_rel

    def _finish(self) -> dict[str, Any]:
        dicts, sem_seg, instances = [], [], []
        used = set(self.image_ids.values())
        next_id = 1
        for _, record in self.records():
            image_id = self.image_ids.get(record["image"])
            if image_id is None:
                while next_id in used:
                    next_id += 1
                image_id, next_id = next_id, next_id + 1
            file_name = self._file_name(record["image"])
            dicts.append(
                {"file_name": file_name, "height": record["height"], "width": record["width"],
                 "image_id": image_id}
            )  # fmt: skip
            regions, boxes = record["regions"], record.get("boxes")
            for index, region in enumerate(regions):
                category = self.label_of(region["name"])
                if record.get("kind") == "instances":
                    x1, y1, x2, y2 = boxes[index]
                    bbox = [x1, y1, x2 - x1, y2 - y1]
                else:
                    bbox = None
                if record.get("kind") == "sem_seg":
                    sem_seg.append(
                        {"file_name": file_name, "category_id": category,
                         "segmentation": region["rle"]}
                    )  # fmt: skip
                    continue
                if bbox is None:  # a referring mask: its box is the mask's
                    rle = region["rle"]
                    coded = {"size": rle["size"], "counts": rle["counts"].encode()}
                    bbox = [float(v) for v in mask_utils.toBbox(coded)]
                instances.append(
                    {"image_id": image_id, "category_id": category, "bbox": bbox,
                     "score": region["score"], "segmentation": region["rle"]}
                )  # fmt: skip
        summary: dict[str, Any] = {"path": str(self.out_dir), "images": len(dicts)}
        kinds = {record.get("kind") for _, record in self.records()}
        if "sem_seg" in kinds:
            atomic_write_json(self.out_dir / SEM_SEG_NAME, sem_seg)
            summary["sem_seg_predictions"] = len(sem_seg)
        if kinds - {"sem_seg"}:
            atomic_write_json(self.out_dir / INSTANCES_NAME, instances)
            summary["instances"] = len(instances)
        atomic_write_json(self.out_dir / DICTS_NAME, dicts)
        metadata = {"thing_classes": self.class_names, "stuff_classes": self.class_names}
        atomic_write_json(self.out_dir / METADATA_NAME, metadata)
        return summary
