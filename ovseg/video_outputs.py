"""Writing a video run: per-frame PNGs, an overlay MP4 and the tracks file, each atomically.

For a video ``<stem>`` in ``out_dir``:

* ``<stem>_frames/<frame>_tracks.png`` (instance task): uint16 track ids (0: no track; where
  tracks overlap the higher score wins); ``<stem>_frames/<frame>_mask.png`` (referring): 255 on
  the union of the phrase's tracks, 0 elsewhere. ``<frame>`` is the frame file's stem (frame
  folders) or the 5-digit frame index (video files);
* ``<stem>_overlay.mp4``: every processed frame with its tracks drawn (``<id> <class> <score>``),
  at the video's frame rate (10 fps when unknown), enlarged like the image overlays;
* ``<stem>_tracks.json``: :mod:`ovseg.tracks` (written last: its presence marks a finished run;
  ``complete: false`` when the run stopped early).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ovseg.io import write_png_atomic
from ovseg.io_video import VideoWriter
from ovseg.structures import Instances
from ovseg.tracks import TrackRecorder, mask_box
from ovseg.visualize import draw_instances, picture_scale

__all__ = ["VideoOutputWriter", "track_id_map"]


def track_id_map(ids: np.ndarray, masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint16 track ids from ``(N, H, W)`` masks; overlaps go to the higher score."""
    height, width = masks.shape[1:]
    out = np.zeros((height, width), dtype=np.uint16)
    for k in np.argsort(scores, kind="stable"):
        out[masks[k]] = ids[k]
    return out


class VideoOutputWriter:
    """Writes one video run's outputs (see the module docstring); use as a context manager."""

    def __init__(
        self,
        out_dir: str | Path,
        stem: str,
        run: Any,
        *,
        overlay: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.stem = stem
        self.task = run.task
        info = run.info
        self.paths = {
            "frames": self.out_dir / f"{stem}_frames",
            "overlay": self.out_dir / f"{stem}_overlay.mp4",
            "tracks": self.out_dir / f"{stem}_tracks.json",
        }
        query = run.query if isinstance(run.query, str) else list(run.class_names)
        self.recorder = TrackRecorder(
            run.task, query, run.class_names, info.path, info.width, info.height, info.fps
        )
        self.scale = picture_scale((info.height, info.width))
        self._video = VideoWriter(self.paths["overlay"], fps=info.fps or 10.0) if overlay else None
        if not overlay:
            del self.paths["overlay"]

    def __enter__(self) -> VideoOutputWriter:
        self.paths["frames"].mkdir(parents=True, exist_ok=True)
        if self._video is not None:
            self._video.__enter__()
        return self

    def add(self, result: Any) -> None:
        """Record and write one :class:`~ovseg.pipelines.video.VideoFrameResult`."""
        self.recorder.add_frame(result.index, result.time, result.name)
        for i, track_id in enumerate(result.track_ids):
            self.recorder.add(
                result.index, int(track_id), int(result.labels[i]), float(result.scores[i]),
                result.masks[i],
            )  # fmt: skip
        stem = Path(result.name).stem
        if self.task == "referring":
            union = result.masks.any(axis=0) if len(result) else np.zeros(result.image.shape[:2])
            write_png_atomic(
                union.astype(np.uint8) * 255, self.paths["frames"] / f"{stem}_mask.png"
            )
        else:
            ids = track_id_map(result.track_ids, result.masks, result.scores)
            write_png_atomic(ids, self.paths["frames"] / f"{stem}_tracks.png")
        if self._video is not None:
            self._video.write(self.picture(result))

    def picture(self, result: Any) -> np.ndarray:
        """The overlay frame: each track's mask, box and ``<id> <class>`` caption."""
        names = [
            f"{int(t)} {result.class_names[int(label)]}"
            for t, label in zip(result.track_ids, result.labels, strict=True)
        ]
        instances = Instances(
            masks=result.masks,
            boxes=np.array([mask_box(m) for m in result.masks], np.float32).reshape(-1, 4),
            scores=result.scores,
            labels=np.arange(len(result), dtype=np.int64),
            class_names=names,
        )
        return draw_instances(result.image, instances, scale=self.scale)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self._video is not None:
            if exc_type is not None and not self.recorder.frames:
                self._video.__exit__(exc_type, exc, tb)
            else:  # keep the overlay of the frames done, even after an interruption
                self._video.__exit__(None, None, None)
        if self.recorder.frames:
            self.recorder.write(self.paths["tracks"], complete=exc_type is None)
        return False
