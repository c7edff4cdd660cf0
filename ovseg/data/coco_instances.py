"""Reader for COCO-format instance annotations (detection and instance segmentation).

Expected tree (the standard COCO layout; ``split`` names the image folder and the JSON)::

    <root>/annotations/instances_val2017.json
    <root>/val2017/000000000139.jpg ...

or any annotation JSON and image folder given as ``ann_file`` / ``img_dir`` (relative paths are
taken under ``root``). The synthetic world's COCO copy reads as ``root=data/synth/coco,
split=val``.

The JSON is checked before anything is read from it; each problem raises ``DatasetError`` naming
the offending ids and what to fix: duplicate image / annotation / category ids, annotations
pointing at unknown images or categories, boxes with no area, malformed segmentations (a
polygon with an odd number of coordinates, an RLE whose size differs from its image ...).
Polygons with fewer than 3 points are dropped, not refused (COCO itself holds a few): pycocotools
would read a 2-point polygon ``[x0, y0, x1, y1]`` as a *box*. How many were dropped is reported
in a warning and kept in ``dropped_polygons``; an annotation left without any polygon is removed
(its id goes to ``dropped_annotation_ids``). A missing ``area`` is filled with the segmentation's
pixel area, a missing ``iscrowd`` with 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ovseg.errors import DatasetError
from ovseg.io import read_image
from ovseg.registry import DATASETS

MIN_POLYGON_COORDS = 6  # 3 points

EXPECTED_TREE = """Expected tree (or pass ann_file=... and img_dir=...):
  <root>/annotations/instances_<split>.json
  <root>/<split>/<file_name of each image> ..."""


@dataclass
class CocoAnnotations:
    """A checked COCO instances document.

    Attributes:
        data: the cleaned document (short polygons and annotations left without segmentation
            removed; ``area`` / ``iscrowd`` filled in); the input is not modified.
        source: where it came from (a path, or a description), for messages.
        dropped_polygons: polygons with fewer than 3 points that were removed.
        dropped_annotation_ids: annotations removed because none of their polygons remained.
    """

    data: dict[str, Any]
    source: str
    dropped_polygons: int = 0
    dropped_annotation_ids: list[int] = field(default_factory=list)

    def to_coco(self) -> COCO:
        """A pycocotools ``COCO`` index over ``data`` (built without its console chatter)."""
        coco = COCO()
        coco.dataset = self.data
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(float(value))
    )


def _ids_text(ids: Iterable[Any], limit: int = 5) -> str:
    ids = list(ids)
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class _Problems:
    """Collects validation problems by kind, then raises them together in one DatasetError."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.by_kind: dict[str, list[Any]] = {}

    def add(self, kind: str, item: Any) -> None:
        self.by_kind.setdefault(kind, []).append(item)

    def raise_if_any(self) -> None:
        if not self.by_kind:
            return
        lines = [f"  - {kind}: {_ids_text(items)}" for kind, items in self.by_kind.items()]
        raise DatasetError(
            f"{self.source} is not a valid COCO instances file:\n"
            + "\n".join(lines)
            + "\nFix or remove those entries (ids are listed) and load it again."
        )


def _duplicates(values: Iterable[Any]) -> list[Any]:
    return sorted(v for v, n in Counter(values).items() if n > 1)


def _check_rle(segm: dict[str, Any], height: int, width: int) -> str | None:
    """Why an RLE segmentation is malformed for an image of ``height x width``, or None."""
    size = segm.get("size")
    counts = segm.get("counts")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(map(_is_int, size))):
        return "RLE 'size' must be [height, width]"
    if [int(size[0]), int(size[1])] != [height, width]:
        return f"RLE size {list(size)} differs from the image's [{height}, {width}]"
    if isinstance(counts, (str, bytes)):
        return None if counts else "RLE 'counts' is empty"
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            return "uncompressed RLE 'counts' must be non-negative integers"
        if sum(counts) != height * width:
            return f"uncompressed RLE counts sum to {sum(counts)}, not height*width"
        return None
    return "RLE 'counts' must be a string (compressed) or a list of integers"


def _clean_polygons(segm: list[Any]) -> tuple[list[list[float]] | None, int, str | None]:
    """``(kept polygons, number dropped, problem)`` for a polygon-list segmentation."""
    if not segm:
        return None, 0, "empty polygon list"
    kept: list[list[float]] = []
    dropped = 0
    for polygon in segm:
        if not isinstance(polygon, (list, tuple)) or not all(map(_is_number, polygon)):
            return None, 0, "a polygon is not a list of finite numbers"
        if len(polygon) % 2:
            return None, 0, f"a polygon has an odd number of coordinates ({len(polygon)})"
        if len(polygon) < MIN_POLYGON_COORDS:
            dropped += 1
            continue
        kept.append([float(v) for v in polygon])
    return kept, dropped, None


def segmentation_to_rle(segm: list | dict, height: int, width: int) -> dict[str, Any]:
    """A checked COCO segmentation (polygons, or compressed / uncompressed RLE) -> one RLE."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    counts = segm["counts"]
    return {
        "size": list(segm["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }


def annotation_instances(
    anns: list[dict[str, Any]], height: int, width: int, label_of: dict[int, int]
) -> dict[str, np.ndarray]:
    """One image's COCO-style annotations as arrays: ``masks (N, H, W)`` bool, ``boxes (N, 4)``
    float32 XYXY pixels (from COCO's XYWH), ``category_ids (N,)`` and contiguous ``labels (N,)``
    int64 (``label_of``: category id -> label), in the order of ``anns``."""
    masks = np.zeros((len(anns), height, width), dtype=bool)
    if anns:  # one decode call for all of the image's masks: (H, W, N) uint8
        rles = [segmentation_to_rle(a["segmentation"], height, width) for a in anns]
        masks[:] = mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)
    boxes = np.array(
        [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32
    ).reshape(-1, 4)
    category_ids = np.array([a["category_id"] for a in anns], dtype=np.int64)
    labels = np.array([label_of[int(c)] for c in category_ids], dtype=np.int64)
    return {"masks": masks, "boxes": boxes, "category_ids": category_ids, "labels": labels}


def validate_coco_instances(data: Any, source: str = "the annotation file") -> CocoAnnotations:
    """Check a COCO instances document and return its cleaned copy (see the module docstring).

    Raises:
        DatasetError: the document is not a mapping with ``images``, ``annotations`` and
            ``categories`` lists, or any entry is invalid (every problem is listed).
    """
    if not isinstance(data, dict):
        raise DatasetError(f"{source} must hold a JSON object, got {type(data).__name__}.")
    missing = [
        k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)
    ]
    if missing:
        raise DatasetError(
            f"{source} has no {', '.join(missing)} list(s); a COCO instances file needs "
            "'images', 'annotations' and 'categories'."
        )
    problems = _Problems(source)

    categories = data["categories"]
    for index, cat in enumerate(categories):
        if not (
            isinstance(cat, dict) and _is_int(cat.get("id")) and isinstance(cat.get("name"), str)
        ):
            problems.add(
                "categories without an integer 'id' and a string 'name' (list positions)", index
            )
    if not categories:
        problems.add("no categories", "the 'categories' list is empty")
    problems.raise_if_any()
    for dup in _duplicates(c["id"] for c in categories):
        problems.add("duplicate category ids", dup)

    images: dict[int, dict[str, Any]] = {}
    for index, img in enumerate(data["images"]):
        ok = (
            isinstance(img, dict)
            and _is_int(img.get("id"))
            and isinstance(img.get("file_name"), str)
            and _is_int(img.get("height"))
            and _is_int(img.get("width"))
            and img["height"] > 0
            and img["width"] > 0
        )
        if not ok:
            problems.add(
                "images without an integer 'id', a 'file_name' and positive 'height'/'width' "
                "(list positions)",
                index,
            )
            continue
        images[int(img["id"])] = img
    for dup in _duplicates(
        img["id"] for img in data["images"] if isinstance(img, dict) and _is_int(img.get("id"))
    ):
        problems.add("duplicate image ids", dup)
    problems.raise_if_any()

    category_ids = {int(c["id"]) for c in categories}
    clean_annotations: list[dict[str, Any]] = []
    dropped_polygons = 0
    dropped_annotation_ids: list[int] = []
    for index, ann in enumerate(data["annotations"]):
        if not (isinstance(ann, dict) and _is_int(ann.get("id"))):
            problems.add("annotations without an integer 'id' (list positions)", index)
            continue
        ann_id = int(ann["id"])
        image = images.get(ann.get("image_id")) if _is_int(ann.get("image_id")) else None
        if image is None:
            problems.add("annotations whose image_id is not an image of the file", ann_id)
            continue
        if not (_is_int(ann.get("category_id")) and int(ann["category_id"]) in category_ids):
            problems.add("annotations whose category_id is not a category of the file", ann_id)
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(_is_number, bbox))):
            problems.add("annotations without a 'bbox' of 4 finite numbers [x, y, w, h]", ann_id)
            continue
        if bbox[2] <= 0 or bbox[3] <= 0:
            problems.add("annotations with an empty or negative-size bbox (w or h <= 0)", ann_id)
            continue
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            problems.add("annotations whose 'iscrowd' is not 0 or 1", ann_id)
            continue
        if "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
            problems.add("annotations whose 'area' is not a non-negative number", ann_id)
            continue
        segm = ann.get("segmentation")
        height, width = int(image["height"]), int(image["width"])
        if isinstance(segm, list):
            polygons, dropped, problem = _clean_polygons(segm)
            if problem is not None:
                problems.add(f"annotations with a malformed segmentation ({problem})", ann_id)
                continue
            dropped_polygons += dropped
            if not polygons:
                dropped_annotation_ids.append(ann_id)
                continue
            segm = polygons
        elif isinstance(segm, dict):
            problem = _check_rle(segm, height, width)
            if problem is not None:
                problems.add(f"annotations with a malformed segmentation ({problem})", ann_id)
                continue
        else:
            problems.add("annotations without a 'segmentation' (polygon list or RLE dict)", ann_id)
            continue
        clean = dict(ann)  # the input document is left as it was
        clean["segmentation"] = segm
        clean["iscrowd"] = int(iscrowd)
        if "area" not in clean:
            clean["area"] = float(mask_utils.area(segmentation_to_rle(segm, height, width)))
        clean_annotations.append(clean)
    for dup in _duplicates(
        a["id"] for a in data["annotations"] if isinstance(a, dict) and _is_int(a.get("id"))
    ):
        problems.add("duplicate annotation ids", dup)
    problems.raise_if_any()

    cleaned = {k: v for k, v in data.items() if k != "annotations"}
    cleaned["images"] = list(images.values())
    cleaned["categories"] = [dict(c) for c in categories]
    cleaned["annotations"] = clean_annotations
    if dropped_polygons:
        warnings.warn(
            f"{source}: dropped {dropped_polygons} polygon(s) with fewer than 3 points"
            + (
                f" and {len(dropped_annotation_ids)} annotation(s) left without any polygon "
                f"(ids {_ids_text(dropped_annotation_ids)})"
                if dropped_annotation_ids
                else ""
            )
            + ".",
            UserWarning,
            stacklevel=2,
        )
    return CocoAnnotations(cleaned, source, dropped_polygons, dropped_annotation_ids)


def load_coco_instances(path: str | os.PathLike) -> CocoAnnotations:
    """Read and check a COCO instances JSON file (see ``validate_coco_instances``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"COCO annotation file {path} does not exist.\n{EXPECTED_TREE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"Cannot read {path} as JSON ({exc}); fetch or write it again.") from exc
    return validate_coco_instances(data, str(path))


def resolve_coco_paths(
    root: str | os.PathLike | None,
    split: str,
    ann_file: str | os.PathLike | None,
    img_dir: str | os.PathLike | None,
) -> tuple[Path, Path]:
    """``(annotation JSON, image folder)`` from the standard layout or explicit paths."""
    base = Path(root).expanduser() if root is not None else None
    if base is None and (ann_file is None or img_dir is None):
        raise DatasetError("Pass root=<COCO folder>, or both ann_file=... and img_dir=....")
    if base is not None and not base.is_dir():
        raise DatasetError(f"COCO root {base} does not exist or is not a folder.\n{EXPECTED_TREE}")

    def under_root(value: str | os.PathLike) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() or base is None else base / path

    ann_path = (
        under_root(ann_file)
        if ann_file is not None
        else base / "annotations" / f"instances_{split}.json"
    )
    image_dir = under_root(img_dir) if img_dir is not None else base / split
    if not ann_path.is_file():
        hint = ""
        if ann_file is None and (base / "annotations").is_dir():
            found = sorted(p.name for p in (base / "annotations").glob("instances_*.json"))
            if found:
                splits = [n[len("instances_") : -len(".json")] for n in found]
                hint = f" It holds {', '.join(found)}: pass split= one of {splits}."
        raise DatasetError(
            f"COCO annotation file {ann_path} does not exist.{hint}\n{EXPECTED_TREE}"
        )
    if not image_dir.is_dir():
        raise DatasetError(f"COCO image folder {image_dir} does not exist.\n{EXPECTED_TREE}")
    return ann_path, image_dir


@DATASETS.register()
class COCOInstances:
    """Images with instance masks and boxes from a COCO instances JSON.

    Args:
        root: the COCO folder (standard layout), or the base of relative ``ann_file`` /
            ``img_dir``; may be None when both are given.
        split: ``instances_<split>.json`` and the ``<split>`` image folder (``val2017``).
        ann_file: annotation JSON (overrides the layout).
        img_dir: image folder (overrides the layout).

    ``__getitem__(i)`` returns ``{"image": (H, W, 3) uint8 RGB, "image_id": int, "image_path":
    str, "instances": {"masks": (N, H, W) bool, "boxes": (N, 4) float32 XYXY in image pixels
    (x2, y2 exclusive: COCO's ``[x, y, w, h]`` as ``[x, y, x + w, y + h]``), "category_ids": (N,)
    int64, "labels": (N,) int64 index into ``class_names``, "iscrowd": (N,) bool}}``, instances in
    annotation-id order. Images are in image-id order, those without annotations included.

    Attributes: ``coco`` (pycocotools index over the cleaned annotations, the ground truth for
    evaluation), ``categories`` (id -> name), ``category_ids`` (sorted), ``class_names`` (names
    in ``category_ids`` order), ``image_ids``, ``dropped_polygons``, ``dropped_annotation_ids``.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "val2017",
        ann_file: str | os.PathLike | None = None,
        img_dir: str | os.PathLike | None = None,
    ) -> None:
        self.ann_file, self.img_dir = resolve_coco_paths(root, split, ann_file, img_dir)
        checked = load_coco_instances(self.ann_file)
        self.dropped_polygons = checked.dropped_polygons
        self.dropped_annotation_ids = checked.dropped_annotation_ids
        self.coco = checked.to_coco()
        self.categories = {int(c["id"]): str(c["name"]) for c in checked.data["categories"]}
        self.category_ids = sorted(self.categories)
        self.class_names = [self.categories[i] for i in self.category_ids]
        self._label_of = {cid: index for index, cid in enumerate(self.category_ids)}
        self.image_ids = sorted(self.coco.imgs)
        self._check_image_files()

    def _check_image_files(self) -> None:
        missing = [
            self.coco.imgs[i]["file_name"]
            for i in self.image_ids
            if not (self.img_dir / self.coco.imgs[i]["file_name"]).is_file()
        ]
        if missing:
            raise DatasetError(
                f"{len(missing)} of {len(self.image_ids)} images listed in {self.ann_file} are "
                f"not in {self.img_dir}: {_ids_text(missing)}. Point img_dir at the right folder "
                "or download the missing images."
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = self.img_dir / info["file_name"]
        image = read_image(path)
        height, width = int(info["height"]), int(info["width"])
        if image.shape[:2] != (height, width):
            raise DatasetError(
                f"Image {path} is {image.shape[1]}x{image.shape[0]} but {self.ann_file} says "
                f"{width}x{height}; fix the JSON or replace the image."
            )
        anns = sorted(self.coco.imgToAnns.get(image_id, []), key=lambda a: a["id"])
        instances = annotation_instances(anns, height, width, self._label_of)
        instances["iscrowd"] = np.array([bool(a["iscrowd"]) for a in anns], dtype=bool)
        return {
            "image": image,
            "image_id": int(image_id),
            "image_path": str(path),
            "instances": instances,
        }
