"""Several exporters fed image by image, with a manifest that lets an export resume.

``<root>/manifest.json`` records the formats, options, category list and the images in the
export; each format writes under ``<root>/<format>/``. A resumed session (``resume=True``, as
``ovseg predict --skip-existing`` makes it) keeps what an interrupted run wrote, continues the
category list where it stopped and rebuilds the single-file outputs (COCO JSON, CVAT XML) from
the per-image records of both runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ovseg.errors import ConfigError
from ovseg.export.base import regions_of
from ovseg.fileio import atomic_write_json
from ovseg.structures import Instances, OVSegResult, ReferringResult

MANIFEST_NAME = "manifest.json"


def class_names_of(result: Any) -> list[str]:
    """The category list a result brings (a referring result: its phrase)."""
    if isinstance(result, (Instances, OVSegResult)):
        return list(result.class_names)
    if isinstance(result, ReferringResult):
        return [result.phrase]
    return [r.name for r in regions_of(result)]


class ExportSession:
    """Drive the exporters of ``formats`` into ``root`` (``<root>/<format>/``).

    Args:
        root: the export folder.
        formats: format names (``ovseg.export.FORMATS``).
        mask_format / polygon_tolerance: exporter options (see ``Exporter``).
        source_root: folder the images' relative paths are under.
        resume: keep and include what an earlier run of the same export wrote.
        image_ids: image path (relative) -> id, for formats that carry ids (detectron2).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        formats: Sequence[str],
        *,
        mask_format: str = "rle",
        polygon_tolerance: float = 1.0,
        source_root: str | os.PathLike | None = None,
        resume: bool = False,
        image_ids: Mapping[str, int] | None = None,
    ) -> None:
        from ovseg.export import FORMATS

        self.root = Path(root)
        self.options = {"mask_format": mask_format, "polygon_tolerance": float(polygon_tolerance)}
        self.exporters = [FORMATS[name](**self.options) for name in formats]
        for exporter in self.exporters:  # formats that carry image ids keep the dataset's
            if hasattr(exporter, "image_ids"):
                exporter.image_ids = dict(image_ids or {})
        self.source_root = source_root
        self.resume = resume
        self.images: dict[str, str] = {}
        self.class_names: list[str] = []
        self._started = False
        previous = self._read_manifest() if resume else None
        if previous is not None:
            if previous.get("options") != self.options:
                raise ConfigError(
                    f"The export in {self.root} was made with {previous.get('options')}, not "
                    f"{self.options}; use the same options to resume it, or drop "
                    "--skip-existing to export everything again."
                )
            self.images = dict(previous.get("images", {}))
            self.class_names = list(previous.get("class_names", []))

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def _read_manifest(self) -> dict | None:
        if not self.manifest_path.is_file():
            return None
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"Cannot read the export manifest {self.manifest_path} ({exc}); drop "
                "--skip-existing to export everything again."
            ) from exc
        return data if isinstance(data, dict) else None

    def _write_manifest(self, complete: bool) -> None:
        atomic_write_json(
            self.manifest_path,
            {
                "formats": [e.name for e in self.exporters],
                "options": self.options,
                "class_names": self.class_names,
                "complete": complete,
                "images": self.images,
            },
            indent=1,
        )

    def _start(self, class_names: Sequence[str]) -> None:
        for name in class_names:
            if name not in self.class_names:
                self.class_names.append(name)
        for exporter in self.exporters:
            exporter.start(
                self.root / exporter.name,
                self.class_names,
                source_root=self.source_root,
                resume=self.resume,
            )
        self._started = True
        self._write_manifest(complete=False)

    def has(self, image_path_rel: str, key: str) -> bool:
        """True when every format already holds the image (an earlier run exported it)."""
        if not self.resume:
            return False
        if not self._started:
            self._start([])
        done = all(exporter.has(key) for exporter in self.exporters)
        if done:
            self.images[image_path_rel] = key
        return done

    def add(self, image_path_rel: str, key: str, image_size: tuple[int, int], result: Any) -> None:
        """Export one image's result to every format."""
        if not self._started:
            self._start(class_names_of(result))
        known = len(self.class_names)
        for name in class_names_of(result):
            if name not in self.class_names:
                self.class_names.append(name)
        for exporter in self.exporters:
            for name in self.class_names:  # the same category order in every format
                exporter.label_of(name)
            exporter.add(image_path_rel, image_size, result, key=key)
        self.images[image_path_rel] = key
        if len(self.class_names) != known:  # keep the category order of a later resume
            self._write_manifest(complete=False)

    def finish(self, complete: bool = True) -> dict[str, Any]:
        """Write the export-wide files (only when ``complete``) and the manifest."""
        if not self._started:
            self._start([])
        outputs = [exporter.finish() for exporter in self.exporters] if complete else []
        self._write_manifest(complete=complete)
        return {
            "folder": str(self.root),
            "manifest": str(self.manifest_path),
            "complete": complete,
            "images": len(self.images),
            "formats": outputs,
        }
