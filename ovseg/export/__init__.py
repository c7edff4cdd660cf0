"""Predictions as labelled datasets (COCO, YOLO, labelme, CVAT, ADE20K layout) or detectron2 results.

``create_exporter("coco", mask_format="rle", polygon_tolerance=1.0)`` gives an exporter driven
as ``start(out_dir, class_names)`` / ``add(image_path_rel, image_size, result)`` / ``finish()``
(:class:`ovseg.export.base.Exporter`); ``ExportSession`` drives several for ``ovseg predict
--export`` with a manifest and resumption.
"""

from __future__ import annotations

from ovseg.errors import ConfigError
from ovseg.export.ade import AdeExporter
from ovseg.export.base import Exporter, Region, regions_of
from ovseg.export.coco import CocoExporter
from ovseg.export.cvat import CvatExporter
from ovseg.export.detectron2 import Detectron2Exporter
from ovseg.export.labelme import LabelmeExporter
from ovseg.export.yolo import YoloExporter

FORMATS: dict[str, type[Exporter]] = {
    CocoExporter.name: CocoExporter,
    YoloExporter.name: YoloExporter,
    LabelmeExporter.name: LabelmeExporter,
    CvatExporter.name: CvatExporter,
    AdeExporter.name: AdeExporter,
    Detectron2Exporter.name: Detectron2Exporter,
}


def parse_formats(text: str) -> list[str]:
    """``"coco,yolo"`` -> ``["coco", "yolo"]`` (checked, duplicates dropped, order kept)."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ConfigError(
            f"--export takes formats separated by commas from {', '.join(FORMATS)}; got {text!r}."
        )
    return list(dict.fromkeys(names))


def create_exporter(name: str, **options) -> Exporter:
    """The exporter of format ``name`` (see ``FORMATS``) with ``mask_format`` /
    ``polygon_tolerance`` options."""
    return FORMATS[parse_formats(name)[0]](**options)


__all__ = [
    "FORMATS",
    "Exporter",
    "Region",
    "create_exporter",
    "parse_formats",
    "regions_of",
]
