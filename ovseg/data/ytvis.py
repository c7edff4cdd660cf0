"""Reading video-instance ground truth in the YouTube-VIS 2019 layout.

``<split>.json`` holds ``videos`` (``id``, ``file_names`` relative to the frame root, ``width``,
``height``), ``annotations`` (``video_id``, ``category_id``, ``segmentations``: one compressed
or uncompressed RLE, polygon list or ``None`` per frame) and ``categories`` (``id``, ``name``).
Frames are under ``<root>/JPEGImages`` by default (``<split>/JPEGImages`` next to the JSON).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.errors import DatasetError

__all__ = ["YtvisObject", "YtvisVideo", "read_ytvis"]


@dataclass
class YtvisObject:
    """One annotated object: ``segmentations`` per frame (None: not visible)."""

    id: int
    category_id: int
    name: str
    segmentations: list[Any]
    size: tuple[int, int]

    def mask(self, frame: int) -> np.ndarray:
        """``(H, W)`` bool mask on frame ``frame`` (empty when not visible)."""
        from pycocotools import mask as mask_utils

        seg = self.segmentations[frame]
        height, width = self.size
        if seg is None:
            return np.zeros((height, width), dtype=bool)
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = {"size": seg["size"], "counts": seg["counts"].encode()}
        return mask_utils.decode(rle).astype(bool)

    def masks(self) -> dict[int, np.ndarray]:
        """Frame -> mask, for the frames where the object is visible."""
        return {t: self.mask(t) for t, s in enumerate(self.segmentations) if s is not None}


@dataclass
class YtvisVideo:
    id: int
    frames: list[Path]
    height: int
    width: int
    objects: list[YtvisObject] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        """The folder of the frames (they share one)."""
        return self.frames[0].parent


def read_ytvis(
    json_path: str | os.PathLike, frames_root: str | os.PathLike | None = None
) -> tuple[list[YtvisVideo], dict[int, str]]:
    """The videos of a YouTube-VIS JSON and ``{category id: name}``."""
    path = Path(json_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        root = Path(frames_root) if frames_root else path.with_suffix("") / "JPEGImages"
        videos = {
            int(v["id"]): YtvisVideo(
                int(v["id"]),
                [root / name for name in v["file_names"]],
                int(v["height"]),
                int(v["width"]),
            )
            for v in data["videos"]
        }
        for ann in data["annotations"]:
            video = videos[int(ann["video_id"])]
            if len(ann["segmentations"]) != len(video.frames):
                raise DatasetError(
                    f"{path}: annotation {ann['id']} has {len(ann['segmentations'])} frames, its "
                    f"video {len(video.frames)}."
                )
            video.objects.append(
                YtvisObject(
                    int(ann["id"]),
                    int(ann["category_id"]),
                    categories[int(ann["category_id"])],
                    list(ann["segmentations"]),
                    (video.height, video.width),
                )
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"{path} is not a readable YouTube-VIS annotation file ({type(exc).__name__}: {exc})."
        ) from exc
    missing = [v.frames[0] for v in videos.values() if v.frames and not v.frames[0].is_file()]
    if missing:
        raise DatasetError(
            f"{missing[0]} does not exist; give the frame folder (the one holding the clip "
            "folders) as frames_root / --frames."
        )
    return list(videos.values()), categories
