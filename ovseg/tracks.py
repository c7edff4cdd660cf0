"""The video tracks file (``tracks.json``): what a video run found, one record per object.

Schema (``format: "ovseg.video_tracks"``, ``version: 1``)::

    {
      "format": "ovseg.video_tracks", "version": 1,
      "task": "instance" | "referring",
      "query": ["red star", ...] | "the red star",
      "class_names": ["red star", ...],          # "class" of a track indexes this list
      "video": {"source": str, "width": int, "height": int, "fps": float | null,
                "frames": [{"index": int, "time": float | null, "name": str}, ...]},
      "complete": bool,                           # false: the run stopped early
      "tracks": [
        {"id": int (>= 1, unique), "label": int, "class": str, "score": float (mean),
         "first_frame": int, "last_frame": int,
         "frames": [{"index": int, "label": int, "score": float, "box": [x0, y0, x1, y1],
                     "segmentation": {"size": [H, W], "counts": str}}, ...]},
        ...
      ]
    }

A track's ``label`` is its score-weighted class vote: the label whose frames' scores sum
highest (ties: the lower label); each frame keeps the label detected there. Frame ``index`` is
the frame's position in the video (decoding order / sorted frame names);
``video.frames`` lists the processed frames in order (with a step or a range, a subset).
Boxes are XYXY in input pixels with exclusive ``x1, y1``; masks are COCO compressed RLE
(column-major, as ``pycocotools.mask.encode``). :func:`read_tracks` checks a file against this
schema and returns :class:`VideoTracks`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.errors import DatasetError
from ovseg.fileio import atomic_write_json

__all__ = [
    "TRACKS_FORMAT",
    "TRACKS_VERSION",
    "TrackRecorder",
    "VideoTracks",
    "decode_mask",
    "encode_mask",
    "mask_box",
    "read_tracks",
    "vote_label",
]

TRACKS_FORMAT = "ovseg.video_tracks"
TRACKS_VERSION = 1


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """``(H, W)`` bool -> compressed RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """Compressed RLE -> ``(H, W)`` bool."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    counts = counts.encode() if isinstance(counts, str) else counts
    return mask_utils.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)


def mask_box(mask: np.ndarray) -> list[float]:
    """XYXY box of a mask (exclusive ``x1, y1``); ``[0, 0, 0, 0]`` when empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def vote_label(frames: Sequence[dict[str, Any]]) -> int:
    """The label whose frames' ``score`` values sum highest (ties: the lower label)."""
    totals: dict[int, float] = {}
    for frame in frames:
        totals[int(frame["label"])] = totals.get(int(frame["label"]), 0.0) + float(frame["score"])
    return min(totals, key=lambda label: (-totals[label], label))


@dataclass
class TrackRecorder:
    """Collects per-frame track masks (as RLE) and writes the tracks file.

    ``add`` per object per frame; ``add_frame`` per processed frame (in order).
    """

    task: str
    query: Any
    class_names: Sequence[str]
    source: str
    width: int
    height: int
    fps: float | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    tracks: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add_frame(self, index: int, time: float | None, name: str) -> None:
        self.frames.append({"index": int(index), "time": time, "name": str(name)})

    def add(self, frame: int, track_id: int, label: int, score: float, mask: np.ndarray) -> None:
        track = self.tracks.setdefault(int(track_id), {"id": int(track_id), "frames": []})
        track["frames"].append(
            {
                "index": int(frame),
                "label": int(label),
                "score": float(score),
                "box": mask_box(mask),
                "segmentation": encode_mask(mask),
            }
        )

    def to_dict(self, complete: bool = True) -> dict[str, Any]:
        tracks = []
        for track_id in sorted(self.tracks):
            track = dict(self.tracks[track_id])
            frames = track["frames"]
            track["label"] = vote_label(frames)
            track["class"] = str(self.class_names[track["label"]])
            track["score"] = float(np.mean([f["score"] for f in frames]))
            track["first_frame"] = frames[0]["index"]
            track["last_frame"] = frames[-1]["index"]
            tracks.append(
                {
                    k: track[k]
                    for k in ("id", "label", "class", "score", "first_frame", "last_frame")
                }
                | {"frames": frames}
            )
        return {
            "format": TRACKS_FORMAT,
            "version": TRACKS_VERSION,
            "task": self.task,
            "query": self.query,
            "class_names": list(self.class_names),
            "video": {
                "source": self.source,
                "width": int(self.width),
                "height": int(self.height),
                "fps": self.fps,
                "frames": self.frames,
            },
            "complete": bool(complete),
            "tracks": tracks,
        }

    def write(self, path: str | os.PathLike, complete: bool = True) -> Path:
        return atomic_write_json(path, self.to_dict(complete))


@dataclass(frozen=True)
class VideoTracks:
    """A read tracks file: the raw dict plus mask access."""

    data: dict[str, Any]

    @property
    def tracks(self) -> list[dict[str, Any]]:
        return self.data["tracks"]

    @property
    def frame_indices(self) -> list[int]:
        return [f["index"] for f in self.data["video"]["frames"]]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.data["video"]["height"]), int(self.data["video"]["width"])

    def track(self, track_id: int) -> dict[str, Any]:
        for track in self.tracks:
            if track["id"] == track_id:
                return track
        raise KeyError(track_id)

    def masks(self, track_id: int) -> dict[int, np.ndarray]:
        """Frame index -> ``(H, W)`` bool mask of one track (frames where it is present)."""
        return {f["index"]: decode_mask(f["segmentation"]) for f in self.track(track_id)["frames"]}

    def frame_masks(self, index: int) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        """``(track, mask)`` of every track present on frame ``index``."""
        for track in self.tracks:
            for frame in track["frames"]:
                if frame["index"] == index:
                    yield track, decode_mask(frame["segmentation"])


def _require(condition: bool, path: Any, what: str) -> None:
    if not condition:
        raise DatasetError(f"{path} is not a valid ovseg tracks file: {what}.")


def read_tracks(path: str | os.PathLike) -> VideoTracks:
    """Read and check a tracks file (:class:`~ovseg.errors.DatasetError` when it does not fit
    the schema)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} cannot be read as JSON ({exc}).") from exc
    _require(isinstance(data, dict), path, "not a JSON object")
    _require(data.get("format") == TRACKS_FORMAT, path, f"format is not {TRACKS_FORMAT!r}")
    _require(
        data.get("version") == TRACKS_VERSION, path, f"version {data.get('version')!r} unknown"
    )
    video = data.get("video")
    _require(isinstance(video, dict), path, "no 'video' object")
    for key in ("width", "height", "frames"):
        _require(key in video, path, f"video.{key} missing")
    names = data.get("class_names")
    _require(isinstance(names, list), path, "class_names is not a list")
    tracks = data.get("tracks")
    _require(isinstance(tracks, list), path, "tracks is not a list")
    ids = set()
    size = [int(video["height"]), int(video["width"])]
    for track in tracks:
        _require(isinstance(track, dict) and isinstance(track.get("id"), int), path, "track id")
        _require(track["id"] not in ids, path, f"track id {track['id']} repeated")
        ids.add(track["id"])
        label = track.get("label")
        _require(isinstance(label, int) and 0 <= label < len(names), path, "track label")
        frames = track.get("frames")
        _require(isinstance(frames, list) and bool(frames), path, f"track {track['id']} frames")
        for frame in frames:
            seg = frame.get("segmentation") if isinstance(frame, dict) else None
            _require(
                isinstance(seg, dict) and list(seg.get("size", [])) == size,
                path,
                f"track {track['id']} frame segmentation size",
            )
            _require(isinstance(frame.get("index"), int), path, "frame index")
    return VideoTracks(data)
