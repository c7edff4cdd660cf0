"""Write scenes as a COCO instances dataset.

Tree written under ``OUT``::

    OUT/coco/train/000000000001.jpg ...           JPEG quality 95
    OUT/coco/val/000000000001.jpg ...
    OUT/coco/annotations/instances_train.json     written last, at ``finalize``
    OUT/coco/annotations/instances_val.json

Annotations: ``bbox`` XYWH pixels of the visible mask, ``area`` visible pixel count,
``iscrowd`` 0, ``category_id`` = thing index + 1, ``segmentation`` either compressed RLE
(``{"size": [H, W], "counts": str}``, pycocotools format) or polygons (lists of pixel-edge
rectangles, which pycocotools rasterises back to exactly the same pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ovseg.data.synthetic import Scene
from ovseg.fileio import atomic_write_json, save_jpeg

SEGMENTATION_KINDS = ("rle", "polygon")


def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) bool mask -> COCO compressed RLE with ``counts`` as str (JSON serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """(H, W) bool mask -> COCO polygons whose union is exactly the mask.

    Each polygon is an axis-aligned rectangle on pixel edges ``[x0,y0, x1,y0, x1,y1, x0,y1]``
    (x1, y1 exclusive): row runs of equal extent in consecutive rows are merged vertically.
    Exact for any mask, holes included, at the cost of more polygons than a traced contour.
    """
    height = mask.shape[0]
    rects: list[tuple[int, int, int, int]] = []
    open_runs: dict[tuple[int, int], int] = {}
    for y in range(height + 1):
        runs: set[tuple[int, int]] = set()
        if y < height:
            edges = np.flatnonzero(np.diff(np.concatenate([[0], mask[y].astype(np.int8), [0]])))
            runs = set(zip(edges[0::2].tolist(), edges[1::2].tolist()))
        for run in [r for r in open_runs if r not in runs]:
            rects.append((run[0], open_runs.pop(run), run[1], y))
        for run in runs:
            open_runs.setdefault(run, y)
    return [[float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)] for x0, y0, x1, y1 in rects]


class CocoWriter:
    """Streams scenes into COCO image folders; ``finalize`` writes the instances JSONs."""

    def __init__(
        self,
        out_dir: str | Path,
        thing_classes: Sequence[str],
        *,
        segmentation: str = "rle",
        quality: int = 95,
    ) -> None:
        if segmentation not in SEGMENTATION_KINDS:
            raise ValueError(
                f"segmentation must be one of {SEGMENTATION_KINDS}, got {segmentation!r}."
            )
        self.root = Path(out_dir) / "coco"
        self.segmentation = segmentation
        self.quality = quality
        self.categories = [
            {"id": i + 1, "name": name, "supercategory": name.split(" ", 1)[1]}
            for i, name in enumerate(thing_classes)
        ]
        self.images: dict[str, list[dict]] = {"train": [], "val": []}
        self.annotations: dict[str, list[dict]] = {"train": [], "val": []}

    def add(self, scene: Scene, split: str, index: int) -> None:
        """Write the image of scene ``index`` (1-based, = image id) and record its objects."""
        file_name = f"{index:012d}.jpg"
        save_jpeg(self.root / split / file_name, scene.image, self.quality)
        height, width = scene.label.shape
        self.images[split].append(
            {"id": index, "file_name": file_name, "height": height, "width": width}
        )
        anns = self.annotations[split]
        for obj in scene.instances:
            x0, y0, x1, y1 = obj.box
            segm = (
                mask_to_rle(obj.mask) if self.segmentation == "rle" else mask_to_polygons(obj.mask)
            )
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": index,
                    "category_id": obj.class_id + 1,
                    "segmentation": segm,
                    "area": float(obj.area),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "iscrowd": 0,
                }
            )

    def finalize(self) -> dict:
        """Write ``annotations/instances_{train,val}.json`` for splits that got images."""
        summary: dict = {"root": str(self.root)}
        for split, images in self.images.items():
            if not images:
                continue
            path = self.root / "annotations" / f"instances_{split}.json"
            atomic_write_json(
                path,
                {
                    "info": {"description": "ovseg synthetic shapes world", "version": "1.0"},
                    "licenses": [],
                    "images": images,
                    "annotations": self.annotations[split],
                    "categories": self.categories,
                },
            )
            summary[f"{split}_json"] = str(path)
            summary[f"{split}_images"] = str(self.root / split)
            summary[f"num_{split}_images"] = len(images)
            summary[f"num_{split}_annotations"] = len(self.annotations[split])
        return summary
