"""COCO instances JSON: ``<out>/annotations.json`` that pycocotools (and ovseg's COCO reader) load.

``images`` (ids 1..N in key order; ``file_name`` the image's path relative to the input folder,
so the input folder is the COCO image folder), ``categories`` (ids 1..C in vocabulary order,
then classes first seen in results), ``annotations`` (ids 1..; ``segmentation`` a compressed RLE
by default, exact; or, with ``mask_format="polygon"``, the outer rings of the mask's parts in
COCO's pixel-edge frame: COCO polygons cannot carry holes, so holes are filled), ``bbox``
``[x, y, w, h]`` and ``area`` of the mask itself, ``score`` and ``iscrowd`` 0.

Each added image is kept as ``<out>/records/<key>.json`` (its masks as RLE), and ``finish``
rebuilds ``annotations.json`` from all records, so a resumed export covers the images of the
interrupted run too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ovseg.evaluation.coco import masks_to_rles
from ovseg.export.base import Exporter, Region, read_json_records, write_json_record
from ovseg.export.polygons import outer_rings
from ovseg.fileio import atomic_write_json

ANNOTATIONS_NAME = "annotations.json"
RECORDS_DIR = "records"


def encode_regions(regions: list[Region]) -> list[dict[str, Any]]:
    """Regions as JSON-ready ``{"name", "score", "rle"}`` (compressed RLE, counts as str)."""
    if not regions:
        return []
    rles = masks_to_rles(np.stack([r.mask for r in regions]))
    return [
        {"name": r.name, "score": r.score, "rle": rle} for r, rle in zip(regions, rles, strict=True)
    ]


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """A record's compressed RLE -> ``(H, W)`` bool mask."""
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


class RegionRecordExporter(Exporter):
    """Exporters whose one output file is rebuilt at ``finish`` from per-image records
    (``records/<key>.json``: ``{"image", "height", "width", "regions"}``, RLE masks), so an
    interrupted export resumes with the earlier images included."""

    def record_path(self, key: str):
        return self.out_dir / RECORDS_DIR / f"{key}.json"

    def has(self, key: str) -> bool:
        return self.out_dir is not None and self.record_path(key).is_file()

    def _add(self, key, image_path_rel, image_size, regions) -> None:
        record = {
            "image": image_path_rel,
            "height": image_size[0],
            "width": image_size[1],
            "regions": encode_regions(regions),
        }
        write_json_record(self.record_path(key), record)

    def records(self) -> list[tuple[str, dict[str, Any]]]:
        """``(key, record)`` of every image exported so far, in key order."""
        return list(read_json_records(self.out_dir / RECORDS_DIR))


class CocoExporter(RegionRecordExporter):
    """Writes ``annotations.json`` (COCO instances) from per-image records; see the module."""

    name = "coco"

    def _segmentation(self, rle: dict[str, Any]) -> Any:
        if self.mask_format == "rle":
            return rle
        rings = outer_rings(decode_rle(rle), self.polygon_tolerance, frame="edge")
        return [[round(float(v), 2) for v in ring.ravel()] for ring in rings]

    def _finish(self) -> dict[str, Any]:
        images, annotations = [], []
        for image_id, (_, record) in enumerate(self.records(), 1):
            images.append(
                {
                    "id": image_id,
                    "file_name": record["image"],
                    "height": record["height"],
                    "width": record["width"],
                }
            )
            for region in record["regions"]:
                rle = region["rle"]
                coded = {"size": rle["size"], "counts": rle["counts"].encode()}
                entry = {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": self.label_of(region["name"]) + 1,
                    "segmentation": self._segmentation(rle),
                    "area": int(mask_utils.area(coded)),
                    "bbox": [float(v) for v in mask_utils.toBbox(coded)],
                    "iscrowd": 0,
                }
                if region["score"] is not None:
                    entry["score"] = round(float(region["score"]), 6)
                annotations.append(entry)
        categories = [
            {"id": index + 1, "name": name, "supercategory": "object"}
            for index, name in enumerate(self.class_names)
        ]
        document = {
            "info": {"description": "ovseg predictions", "version": "1.0"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        path = self.out_dir / ANNOTATIONS_NAME
        atomic_write_json(path, document)
        return {"path": str(path), "images": len(images), "annotations": len(annotations)}
