"""Video tab: a short clip and a phrase (referring) or a vocabulary (instance) -> tracks.

The clip is checked before a frame is decoded: its size in bytes (:attr:`VideoHandler.max_bytes`)
here, then the frame size and the number of frames (:attr:`VideoHandler.max_frames`) by
:func:`ovseg.io_video.open_video`'s budget checks, so a clip over budget is refused with
:class:`~ovseg.errors.VideoTooLargeError` saying what to do. The run writes what
``ovseg predict --video`` writes (:class:`~ovseg.video_outputs.VideoOutputWriter`: per-frame
PNGs, the overlay MP4, the tracks JSON) in the session folder.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovseg.demo.handlers.common import VIDEO_TASK, parse_vocabulary
from ovseg.demo.handlers.referring import check_phrase
from ovseg.demo.security import DEFAULT_VIDEO_MAX_FRAMES, DEFAULT_VIDEO_MAX_MB, MIB
from ovseg.errors import ConfigError, PromptError, VideoReadError, VideoTooLargeError
from ovseg.io import DEFAULT_MAX_PIXELS
from ovseg.io_video import open_video
from ovseg.video_outputs import VideoOutputWriter

#: default cap on an uploaded clip's size in bytes (``ovseg demo --video-max-mb``)
DEFAULT_VIDEO_MAX_BYTES = int(DEFAULT_VIDEO_MAX_MB * MIB)
VIDEO_MODES = {"Phrase (referring)": "referring", "Vocabulary (instance)": "instance"}
VIDEO_HEADERS = ["track", "class", "mean score", "first frame", "last frame", "frames"]


@dataclass
class VideoPipelines:
    """The video pipelines of the served config, by task (``referring`` / ``instance``); a task
    the config does not define is None."""

    referring: Any = None
    instance: Any = None


def build_video_pipelines(
    preset_or_config: Any, overrides: list[str], device: str | None
) -> VideoPipelines:
    """Both video pipelines that the config defines (:func:`ovseg.create_pipeline` with
    ``task="video_referring"`` / ``"video_instance"``); :class:`ConfigError` when it defines
    neither. Missing weights or packages are raised as they are."""
    from ovseg.api import create_pipeline

    built: dict[str, Any] = {}
    reasons = []
    for mode in ("referring", "instance"):
        try:
            built[mode] = create_pipeline(
                preset_or_config, task=f"video_{mode}", overrides=overrides, device=device
            )
        except ConfigError as exc:
            reasons.append(str(exc))
    if not built:
        raise ConfigError("No video pipeline: " + " ".join(reasons))
    return VideoPipelines(**built)


def tracks_rows(tracks: dict[str, Any]) -> list[list[Any]]:
    """One :data:`VIDEO_HEADERS` row per track of a tracks dict (:mod:`ovseg.tracks`)."""
    return [
        [
            t["id"],
            t["class"],
            round(t["score"], 4),
            t["first_frame"],
            t["last_frame"],
            len(t["frames"]),
        ]
        for t in tracks["tracks"]
    ]


def file_digest(path: Path) -> str:
    """blake2b (16 bytes) of a file's content, read in chunks."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class VideoOutput:
    """Everything the video tab shows for one run.

    Attributes:
        overlay: the overlay MP4 (every frame with its tracks: mask, box, ``<id> <class>``).
        tracks_json: the tracks file (:mod:`ovseg.tracks`).
        table: one :data:`VIDEO_HEADERS` row per track.
        files: ``[tracks_json, overlay]``, the downloads.
        num_frames: frames processed.
    """

    overlay: Path
    tracks_json: Path
    table: list[list[Any]]
    files: list[Path]
    num_frames: int


class VideoHandler:
    """Video segmentation and tracking for the demo.

    Args:
        pipelines: a :class:`VideoPipelines`, or one
            :class:`~ovseg.pipelines.video.VideoSegmenter` (its ``task`` is the only mode).
        max_bytes: largest clip accepted, in bytes.
        max_frames: most frames of a clip (also capped by the pipeline's own ``max_frames``).
    """

    def __init__(
        self,
        pipelines: Any,
        max_bytes: int = DEFAULT_VIDEO_MAX_BYTES,
        max_frames: int = DEFAULT_VIDEO_MAX_FRAMES,
    ) -> None:
        if not isinstance(pipelines, VideoPipelines):
            task = getattr(pipelines, "task", None)
            serves_video = callable(getattr(pipelines, "track", None))
            single = serves_video and task in VIDEO_MODES.values()
            pipelines = VideoPipelines(**{task: pipelines}) if single else VideoPipelines()
        self.pipelines = {
            mode: getattr(pipelines, mode)
            for mode in VIDEO_MODES.values()
            if getattr(pipelines, mode) is not None
        }
        if not self.pipelines:
            raise ConfigError(
                f"The {VIDEO_TASK} tab needs a video pipeline (VideoSegmenter, "
                "task video_referring or video_instance)."
            )
        for mode, pipeline in self.pipelines.items():
            if not callable(getattr(pipeline, "track", None)):
                raise ConfigError(
                    f"The {VIDEO_TASK} tab needs a VideoSegmenter for {mode}, not "
                    f"{type(pipeline).__name__}."
                )
        self.limit(max_bytes, max_frames)

    def limit(self, max_bytes: int, max_frames: int) -> None:
        """Set the budget: the largest clip in bytes and the most frames of a clip."""
        if max_bytes < 1 or max_frames < 1:
            raise ConfigError("The video budget needs max_bytes >= 1 and max_frames >= 1.")
        self.max_bytes = int(max_bytes)
        self.max_frames = int(max_frames)

    @property
    def modes(self) -> list[str]:
        """The modes this config serves, as the labels of :data:`VIDEO_MODES`."""
        return [label for label, mode in VIDEO_MODES.items() if mode in self.pipelines]

    def check_clip(self, video: Any) -> Path:
        """The uploaded clip's path, refused when absent or over :attr:`max_bytes`."""
        if video is None or (isinstance(video, str) and not video):
            raise VideoReadError("No clip given; upload a short video (MP4, WebM, MOV ...).")
        path = Path(os.fspath(video))
        if not path.is_file():
            raise VideoReadError(f"{path.name}: the uploaded clip is not there; upload it again.")
        size = path.stat().st_size
        if size > self.max_bytes:
            raise VideoTooLargeError(
                f"The clip has {size:,} bytes ({size / 2**20:.1f} MiB), more than this demo's cap "
                f"of {self.max_bytes:,} bytes. Upload a shorter or smaller clip, or run "
                "`ovseg predict CLIP --video` locally."
            )
        return path

    def run(self, video: Any, mode: Any, query: Any, *, out_dir: str | Path) -> VideoOutput:
        """Track ``query`` through the clip ``video``: a phrase for ``mode`` ``referring``,
        a vocabulary (``"a|a2, b"``) for ``instance``; ``mode`` may also be a label of
        :data:`VIDEO_MODES`."""
        mode = VIDEO_MODES.get(mode, mode)
        if mode not in self.pipelines:
            raise PromptError(
                f"Choose one of the modes {', '.join(self.modes)}; {mode!r} is not served here."
            )
        query = check_phrase(query) if mode == "referring" else parse_vocabulary(query)
        path = self.check_clip(video)
        pipeline = self.pipelines[mode]
        caps = [c for c in (self.max_frames, getattr(pipeline, "max_frames", None)) if c]
        source = open_video(
            path,
            max_pixels=getattr(pipeline, "max_pixels", DEFAULT_MAX_PIXELS),
            max_frames=min(caps),
        )
        run = pipeline.track(source, query)  # the budget is checked here, before decoding
        stem = f"ovseg-{file_digest(path)[:12]}-video-{mode}"
        with VideoOutputWriter(Path(out_dir), stem, run) as writer:
            for result in run:
                writer.add(result)
        if not writer.recorder.frames:
            raise VideoReadError(f"{path.name}: the clip has no frame to process.")
        tracks = writer.recorder.to_dict()
        paths = writer.paths
        return VideoOutput(
            overlay=paths["overlay"],
            tracks_json=paths["tracks"],
            table=tracks_rows(tracks),
            files=[paths["tracks"], paths["overlay"]],
            num_frames=len(writer.recorder.frames),
        )
