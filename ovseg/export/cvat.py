"""CVAT for images 1.1 XML: ``<out>/annotations.xml``.

``<annotations>`` holds ``<version>1.1</version>``, ``<meta><task>`` (name, size, mode, the
``<labels>`` of every class) and one ``<image id name width height>`` per image (ids 0.. in
key order; ``name`` the path relative to the input folder). Each region becomes, with
``mask_format="rle"`` (default), one ``<mask>`` element: CVAT's own run-length code (runs
alternating from background, row-major over the mask's box ``left top width height``), exact,
holes included; with ``"polygon"``, one ``<polygon>`` per part (``points="x,y;x,y..."`` in the
pixel-edge frame Datumaro rasterises with pycocotools; holes filled). CVAT shapes carry no
score: the XML is a dataset to correct, not a results file.

As for COCO, each image is kept as ``<out>/records/<key>.json`` and ``finish`` rebuilds the XML
from all records (a resumed export includes the earlier run's images).
"""

from __future__ import annotations

import colorsys
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from ovseg.export.coco import RegionRecordExporter, decode_rle
from ovseg.export.polygons import outer_rings
from ovseg.fileio import atomic_write_bytes

XML_NAME = "annotations.xml"


def mask_to_cvat_rle(mask: np.ndarray) -> tuple[list[int], tuple[int, int, int, int]]:
    """``(H, W)`` bool -> (run lengths over the box, row-major, starting with a background run
    (0 when the first pixel is set), box ``(left, top, width, height)``)."""
    ys, xs = np.nonzero(mask)
    left, top = int(xs.min()), int(ys.min())
    width, height = int(xs.max()) - left + 1, int(ys.max()) - top + 1
    flat = mask[top : top + height, left : left + width].ravel().astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return runs, (left, top, width, height)


def cvat_rle_to_mask(
    runs: list[int], box: tuple[int, int, int, int], height: int, width: int
) -> np.ndarray:
    """Inverse of :func:`mask_to_cvat_rle` into an ``(height, width)`` bool mask."""
    left, top, box_w, box_h = box
    values = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + box_h, left : left + box_w] = values.reshape(box_h, box_w)
    return mask


def _colour(index: int) -> str:
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.65, 0.95)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


class CvatExporter(RegionRecordExporter):
    """CVAT for images 1.1 XML from per-image records; see the module docstring."""

    name = "cvat"

    def _shape(self, parent: ET.Element, name: str, mask: np.ndarray) -> None:
        common = {"label": name, "source": "auto", "occluded": "0", "z_order": "0"}
        if self.mask_format == "rle":
            runs, (left, top, width, height) = mask_to_cvat_rle(mask)
            _sub(
                parent,
                "mask",
                **common,
                rle=", ".join(str(r) for r in runs),
                left=str(left),
                top=str(top),
                width=str(width),
                height=str(height),
            )
            return
        for ring in outer_rings(mask, self.polygon_tolerance, frame="edge"):
            points = ";".join(f"{x:.2f},{y:.2f}" for x, y in ring)
            _sub(parent, "polygon", **common, points=points)

    def _finish(self) -> dict[str, Any]:
        records = self.records()
        for _, record in records:
            for region in record["regions"]:
                self.label_of(region["name"])
        root = ET.Element("annotations")
        _sub(root, "version", "1.1")
        task = _sub(_sub(root, "meta"), "task")
        _sub(task, "name", "ovseg predictions")
        _sub(task, "size", str(len(records)))
        _sub(task, "mode", "annotation")
        labels = _sub(task, "labels")
        for index, name in enumerate(self.class_names):
            label = _sub(labels, "label")
            _sub(label, "name", name)
            _sub(label, "color", _colour(index))
            _sub(label, "type", "any")
            _sub(label, "attributes")
        shapes = 0
        for image_id, (_, record) in enumerate(records):
            image = _sub(
                root,
                "image",
                id=str(image_id),
                name=record["image"],
                width=str(record["width"]),
                height=str(record["height"]),
            )
            for region in record["regions"]:
                self._shape(image, region["name"], decode_rle(region["rle"]))
                shapes += 1
        ET.indent(root)
        data = b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")
        path = self.out_dir / XML_NAME
        atomic_write_bytes(path, data, durable=True)
        return {"path": str(path), "images": len(records), "annotations": shapes}
