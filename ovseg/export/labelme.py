"""labelme JSON per image: ``<out>/<key>.json`` with one polygon shape per mask part.

Each shape: ``label`` (class name), ``points`` ``[[x, y], ...]`` in the pixel-centre frame
labelme fills with PIL's ``ImageDraw.polygon``, ``shape_type`` ``"polygon"``, ``group_id`` (the
region's number in the image, shared by the parts of one mask), ``description`` (the score),
``flags`` {}. labelme polygons have no holes: holes are filled. ``imagePath`` is the input
image relative to the JSON file (``imageData`` null), with ``imageHeight`` / ``imageWidth``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ovseg.export.base import Exporter, write_json_record
from ovseg.export.polygons import outer_rings
from ovseg.fileio import atomic_write_text

LABELME_VERSION = "5.5.0"


class LabelmeExporter(Exporter):
    """labelme annotation files; see the module docstring."""

    name = "labelme"

    def json_path(self, key: str) -> Path:
        return self.out_dir / f"{key}.json"

    def has(self, key: str) -> bool:
        return self.out_dir is not None and self.json_path(key).is_file()

    def _image_path(self, key: str, image_path_rel: str) -> str:
        source = self.source_path(image_path_rel)
        if source is None:
            return Path(image_path_rel).name
        folder = self.json_path(key).parent
        return Path(os.path.relpath(source.resolve(), folder.resolve())).as_posix()

    def _add(self, key, image_path_rel, image_size, regions) -> None:
        shapes = []
        for group, region in enumerate(regions):
            for ring in outer_rings(region.mask, self.polygon_tolerance, frame="centre"):
                shapes.append(
                    {
                        "label": region.name,
                        "points": [[round(float(x), 2), round(float(y), 2)] for x, y in ring],
                        "group_id": group,
                        "description": "" if region.score is None else f"score {region.score:.4f}",
                        "shape_type": "polygon",
                        "flags": {},
                        "mask": None,
                    }
                )
        document = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": shapes,
            "imagePath": self._image_path(key, image_path_rel),
            "imageData": None,
            "imageHeight": image_size[0],
            "imageWidth": image_size[1],
        }
        write_json_record(self.json_path(key), document)

    def _finish(self) -> dict[str, Any]:
        labels = self.out_dir / "labels.txt"  # labelme's --labels file: one class per line
        atomic_write_text(labels, "".join(f"{name}\n" for name in self.class_names))
        count = sum(1 for p in self.out_dir.rglob("*.json") if not p.name.startswith("."))
        return {"path": str(self.out_dir), "images": count}
