"""YOLO segmentation labels (Ultralytics): ``labels/<key>.txt`` per image and ``data.yaml``.

Each line is ``class x1 y1 x2 y2 ...``: the 0-based class index and one polygon's points
normalised by the image width and height (6 decimals), in the pixel-centre frame Ultralytics
rasterises with ``cv2.fillPoly``. YOLO has one polygon per object and no holes: a mask with
several parts gets one line per part, and holes are filled. The images are copied to
``images/<key><suffix>`` (Ultralytics finds a label by swapping ``images`` for ``labels`` in the
image path) when the exporter knows the input folder. ``data.yaml`` gives ``path`` (this folder,
absolute), ``train`` and ``val`` (both ``images``), ``nc`` and ``names`` (index -> name).
"""

from __future__ import annotations

from typing import Any

import yaml

from ovseg.export.base import Exporter, copy_file_atomic
from ovseg.export.polygons import outer_rings
from ovseg.fileio import atomic_write_bytes, atomic_write_text

DATA_YAML = "data.yaml"


class YoloExporter(Exporter):
    """Ultralytics YOLO segmentation dataset; see the module docstring."""

    name = "yolo"

    def label_path(self, key: str):
        return self.out_dir / "labels" / f"{key}.txt"

    def has(self, key: str) -> bool:
        return self.out_dir is not None and self.label_path(key).is_file()

    def _add(self, key, image_path_rel, image_size, regions) -> None:
        height, width = image_size
        lines = []
        for region in regions:
            label = self.label_of(region.name)
            for ring in outer_rings(region.mask, self.polygon_tolerance, frame="centre"):
                coords = " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in ring)
                lines.append(f"{label} {coords}\n")
        source = self.source_path(image_path_rel)
        if source is not None:
            copy_file_atomic(source, self.out_dir / "images" / f"{key}{source.suffix}")
        # the label file last: it marks the image as exported
        atomic_write_bytes(self.label_path(key), "".join(lines).encode("utf-8"))

    def _finish(self) -> dict[str, Any]:
        data = {
            "path": str(self.out_dir.resolve()),
            "train": "images",
            "val": "images",
            "nc": len(self.class_names),
            "names": dict(enumerate(self.class_names)),
        }
        path = self.out_dir / DATA_YAML
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        labels = self.out_dir / "labels"
        count = sum(1 for _ in labels.rglob("*.txt")) if labels.is_dir() else 0
        return {"path": str(path), "images": count}
