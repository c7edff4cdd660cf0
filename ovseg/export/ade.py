"""Semantic label PNGs in the ADE20K layout, readable by ``ovseg.data.ade20k.ADE20KDataset``.

::

    <out>/ADEChallengeData2016/
        annotations/<split>/<name>.png   uint8: class index + 1, 0 unlabelled
        images/<split>/<name><suffix>    the input image (copied; re-encoded as PNG when it is
                                         not .jpg/.jpeg/.png, the suffixes the reader takes)
        ovseg_classes.txt                one class per line, index order

``<name>`` is the image's key with ``/`` as ``__`` (the layout has one flat folder per split).
Instances are painted lowest score first, so where masks overlap the higher-scored one wins,
as in ``instance_id_map``. The reader treats 255 as ignore, so at most 254 classes fit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.data.ade_layout import ADE_DIRNAME, CLASS_FILENAME
from ovseg.errors import ConfigError
from ovseg.export.base import Exporter, copy_file_atomic, flat_key
from ovseg.fileio import atomic_write_text
from ovseg.io import read_image, write_png_atomic

MAX_CLASSES = 254
READER_SUFFIXES = (".jpg", ".jpeg", ".png")


class AdeExporter(Exporter):
    """ADE20K-layout semantic dataset; see the module docstring.

    Args:
        split: ``"validation"`` (default) or ``"training"``: the folder under ``images/`` and
            ``annotations/``.
    """

    name = "ade"

    def __init__(self, *args: Any, split: str = "validation", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if split not in ("validation", "training"):
            raise ConfigError(f"ADE split must be 'validation' or 'training', got {split!r}.")
        self.split = split

    @property
    def dataset_dir(self) -> Path:
        return self.out_dir / ADE_DIRNAME

    def label_path(self, key: str) -> Path:
        return self.dataset_dir / "annotations" / self.split / f"{flat_key(key)}.png"

    def has(self, key: str) -> bool:
        return self.out_dir is not None and self.label_path(key).is_file()

    def start(self, out_dir: str | os.PathLike, class_names, **kwargs: Any) -> None:
        super().start(out_dir, class_names, **kwargs)
        self._check_classes()

    def _check_classes(self) -> None:
        if len(self.class_names) > MAX_CLASSES:
            raise ConfigError(
                f"The ADE20K layout holds at most {MAX_CLASSES} classes (labels 1-{MAX_CLASSES}; "
                f"255 is ignore), this export has {len(self.class_names)}; use --export coco."
            )

    def _add(self, key, image_path_rel, image_size, regions) -> None:
        self._check_classes()
        labels = np.zeros(image_size, dtype=np.uint8)
        order = np.argsort([-1.0 if r.score is None else r.score for r in regions], kind="stable")
        for index in order:
            labels[regions[index].mask] = self.label_of(regions[index].name) + 1
        source = self.source_path(image_path_rel)
        if source is not None:
            image_dir = self.dataset_dir / "images" / self.split
            if source.suffix.lower() in READER_SUFFIXES:
                copy_file_atomic(source, image_dir / f"{flat_key(key)}{source.suffix}")
            else:
                write_png_atomic(
                    read_image(source), image_dir / f"{flat_key(key)}.png", durable=False
                )
        write_png_atomic(labels, self.label_path(key), durable=False)  # last: marks it done

    def _finish(self) -> dict[str, Any]:
        class_file = self.dataset_dir / CLASS_FILENAME
        atomic_write_text(class_file, "".join(f"{name}\n" for name in self.class_names))
        folder = self.dataset_dir / "annotations" / self.split
        count = sum(1 for _ in folder.glob("*.png")) if folder.is_dir() else 0
        return {"path": str(self.dataset_dir), "images": count, "class_file": str(class_file)}
