"""What every exporter shares: the regions of a result, the exporter interface, record files.

A *region* is one labelled mask of one image: an instance (``Instances``), the mask of a
referring phrase (``ReferringResult``, labelled with the phrase) or, for a semantic map
(``OVSegResult``), all the pixels of one class (one region per class present, however many
connected parts it has; its score is the class's mean pixel probability when the result has
one).

An exporter is driven as ``start(out_dir, class_names)``, ``add(image_path_rel, image_size,
result)`` per image, then ``finish()``. Its category list starts as ``class_names`` and grows
(appended, so earlier indices stay valid) when a result names a class it has not seen, as
vocabulary-free results do.
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.errors import ConfigError
from ovseg.fileio import atomic_path, atomic_write_bytes
from ovseg.structures import UNLABELLED, Instances, OVSegResult, ReferringResult

MASK_FORMATS = ("rle", "polygon")


@dataclass
class Region:
    """One labelled mask: ``mask`` ``(H, W)`` bool in input-image pixels, ``name`` its class,
    ``score`` in [0, 1] or None."""

    mask: np.ndarray
    name: str
    score: float | None = None


def regions_of(result: Any) -> list[Region]:
    """The non-empty regions of an ``Instances``, ``OVSegResult`` or ``ReferringResult`` (a list
    of ``Region`` is returned as is, empty masks left out)."""
    if isinstance(result, Instances):
        regions = [
            Region(mask, result.class_names[int(label)], float(score))
            for mask, label, score in zip(result.masks, result.labels, result.scores, strict=True)
        ]
    elif isinstance(result, OVSegResult):
        scores = result.mean_scores()
        present = np.unique(result.sem_seg)
        regions = [
            Region(
                result.sem_seg == index,
                result.class_names[int(index)],
                scores[result.class_names[int(index)]],
            )
            for index in present
            if index != UNLABELLED and 0 <= index < len(result.class_names)
        ]
    elif isinstance(result, ReferringResult):
        regions = [Region(result.mask, result.phrase, float(result.score))]
    elif isinstance(result, list) and all(isinstance(r, Region) for r in result):
        regions = result
    else:
        raise ConfigError(
            f"Cannot export a {type(result).__name__}; give Instances, an "
            "OVSegResult, a ReferringResult or a list of Region."
        )
    return [r for r in regions if r.mask.any()]


def result_image_size(result: Any) -> tuple[int, int] | None:
    """``(H, W)`` of a result, when it carries masks."""
    if isinstance(result, Instances) and len(result):
        return int(result.masks.shape[1]), int(result.masks.shape[2])
    if isinstance(result, OVSegResult):
        return result.image_size
    if isinstance(result, ReferringResult):
        return int(result.mask.shape[0]), int(result.mask.shape[1])
    return None


def key_of(image_path_rel: str) -> str:
    """Default record key of an image: its relative path without the suffix (``sub/a``)."""
    return Path(image_path_rel).with_suffix("").as_posix()


def flat_key(key: str) -> str:
    """``sub/a`` -> ``sub__a``: a key as a single file name (layouts with one flat folder)."""
    return key.replace("/", "__")


def write_json_record(path: Path, obj: Any) -> None:
    """A per-image file, atomically (no fsync: bulk files, the rename keeps them whole)."""
    atomic_write_bytes(path, json.dumps(obj).encode("utf-8"), durable=False)


def read_json_records(folder: Path) -> Iterator[tuple[str, dict]]:
    """``(key, record)`` for every ``*.json`` under ``folder``, in key order."""
    if not folder.is_dir():
        return
    paths = sorted(p for p in folder.rglob("*.json") if not p.name.startswith("."))
    for path in paths:
        key = path.relative_to(folder).with_suffix("").as_posix()
        yield key, json.loads(path.read_text(encoding="utf-8"))


def copy_file_atomic(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically (bulk file: no fsync)."""
    with atomic_path(target, durable=False) as tmp:
        shutil.copyfile(source, tmp)


class Exporter(ABC):
    """Base of the dataset exporters: ``start`` / ``add`` / ``finish`` (see the module docstring).

    Args:
        mask_format: ``"rle"`` or ``"polygon"`` where a format offers both (COCO, CVAT).
        polygon_tolerance: ``cv2.approxPolyDP`` epsilon in input-image pixels.

    Subclasses set ``name`` and implement ``_add(key, image_path_rel, image_size, regions)``,
    ``has(key)`` and ``_finish()``.
    """

    name = ""

    def __init__(self, mask_format: str = "rle", polygon_tolerance: float = 1.0) -> None:
        if mask_format not in MASK_FORMATS:
            raise ConfigError(f"mask format must be one of {MASK_FORMATS}, got {mask_format!r}.")
        if not (polygon_tolerance >= 0 and np.isfinite(polygon_tolerance)):
            raise ConfigError(
                f"polygon tolerance is in pixels and must be >= 0, got {polygon_tolerance}."
            )
        self.mask_format = mask_format
        self.polygon_tolerance = float(polygon_tolerance)
        self.out_dir: Path | None = None
        self.source_root: Path | None = None
        self.class_names: list[str] = []
        self._index: dict[str, int] = {}

    def start(
        self,
        out_dir: str | os.PathLike,
        class_names: Sequence[str],
        *,
        source_root: str | os.PathLike | None = None,
        resume: bool = False,
    ) -> None:
        """Begin an export into ``out_dir`` (this format's folder).

        ``source_root`` is the folder the relative image paths are under (formats that carry
        the images copy them from there). Without ``resume`` the folder is emptied first; with
        it, what an earlier run left (per-image files and records) is kept and included.
        """
        self.out_dir = Path(out_dir)
        self.source_root = Path(source_root) if source_root is not None else None
        if self.out_dir.exists() and not resume:
            shutil.rmtree(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.class_names, self._index = [], {}
        for name in class_names:
            self.label_of(name)

    def label_of(self, name: str) -> int:
        """0-based index of class ``name`` (appended when new)."""
        if name not in self._index:
            self._index[name] = len(self.class_names)
            self.class_names.append(name)
        return self._index[name]

    def add(
        self,
        image_path_rel: str,
        image_size: tuple[int, int],
        result: Any,
        *,
        key: str | None = None,
    ) -> None:
        """Add one image: ``image_path_rel`` (posix, under ``source_root``), ``image_size``
        ``(H, W)`` and its result; ``key`` names its per-image files (default: the path
        without suffix)."""
        if self.out_dir is None:
            raise ConfigError(f"{type(self).__name__}.add() before start().")
        regions = regions_of(result)
        height, width = (int(v) for v in image_size)
        for region in regions:
            if region.mask.shape != (height, width):
                raise ConfigError(
                    f"{image_path_rel}: a mask is {region.mask.shape} but the image is "
                    f"{(height, width)}."
                )
            self.label_of(region.name)
        self._add(key or key_of(image_path_rel), image_path_rel, (height, width), regions)

    def source_path(self, image_path_rel: str) -> Path | None:
        """The input image, when ``source_root`` was given and it exists."""
        if self.source_root is None:
            return None
        path = self.source_root / image_path_rel
        return path if path.is_file() else None

    @abstractmethod
    def has(self, key: str) -> bool:
        """True when the image ``key`` is in the export (its per-image file or record exists)."""

    def finish(self) -> dict[str, Any]:
        """Write the files that cover the whole export; returns ``{"format", "path", ...}``."""
        if self.out_dir is None:
            raise ConfigError(f"{type(self).__name__}.finish() before start().")
        return {"format": self.name, **self._finish()}

    @abstractmethod
    def _add(
        self, key: str, image_path_rel: str, image_size: tuple[int, int], regions: list[Region]
    ) -> None:
        """Write the image's per-image file or record."""

    @abstractmethod
    def _finish(self) -> dict[str, Any]:
        """Write the export-wide files; return a summary."""
