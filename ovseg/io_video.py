"""Video frame sources and an MP4 writer: streaming, budget-checked, with timestamps.

:func:`open_video` takes a video file (``.mp4``, ``.mov``, ``.webm``, ``.mkv``, ``.avi``;
decoded with PyAV) or a folder of frame images and returns a :class:`FrameSource`. Its
:attr:`~FrameSource.info` is read from the container header (or the file names) without
decoding a frame; :meth:`~FrameSource.frames` then yields one :class:`VideoFrame` at a time, so
at most one decoded frame is held, whatever the video's length.

* Timestamps: a container's frames carry their presentation time in seconds (``pts x
  time_base``), so variable frame rates are kept; a folder's frames get ``index / fps`` when an
  ``fps`` is given, else ``None``.
* Frame ranges: ``frames(start, stop, step)`` selects by decoded-frame index (0-based, ``stop``
  exclusive), e.g. to resume a run. Frames before ``start`` are decoded (a frame's index is its
  position in decoding order, which seeking cannot give for variable-rate streams) but never
  converted to RGB or kept.
* Budgets: the frame size (``max_pixels``) and the number of frames the selection would yield
  (``max_frames``) are checked against the header before the first frame is decoded
  (:class:`~ovseg.errors.VideoTooLargeError`); containers that do not state their frame count
  are also stopped while decoding once they exceed it.
* A missing, damaged or unsupported file raises :class:`~ovseg.errors.VideoReadError` naming
  the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.errors import ConfigError, ImageReadError, VideoReadError, VideoTooLargeError
from ovseg.fileio import atomic_path
from ovseg.io import DEFAULT_MAX_PIXELS, read_image

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "FRAME_SUFFIXES",
    "VIDEO_SUFFIXES",
    "FolderFrameSource",
    "FrameSource",
    "PyAVFrameSource",
    "VideoFrame",
    "VideoInfo",
    "VideoWriter",
    "is_video_input",
    "open_video",
    "selected_count",
]

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: default cap on the number of frames one run processes (about 5.5 minutes at 30 fps)
DEFAULT_MAX_FRAMES = 10_000


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame.

    Attributes:
        index: 0-based position in the video (decoding order; the folder's sorted order).
        time: presentation time in seconds, or None when the source has none.
        image: ``(H, W, 3)`` uint8 RGB.
        name: the frame's file name in a folder; ``"{index:05d}"`` for a container.
    """

    index: int
    time: float | None
    image: np.ndarray
    name: str


@dataclass(frozen=True)
class VideoInfo:
    """What the header says: ``num_frames`` None when the container does not state it;
    ``fps`` the average rate (None when unknown)."""

    path: str
    width: int
    height: int
    num_frames: int | None
    fps: float | None
    kind: str  # "container" or "folder"


def _check_range(start: int, stop: int | None, step: int) -> None:
    if isinstance(start, bool) or int(start) != start or start < 0:
        raise ConfigError(f"The first frame must be an integer >= 0, got {start!r}.")
    if stop is not None and (int(stop) != stop or stop < start):
        raise ConfigError(f"The last frame (exclusive) must be >= the first ({start}), got {stop}.")
    if int(step) != step or step < 1:
        raise ConfigError(f"The frame step must be an integer >= 1, got {step!r}.")


def selected_count(num_frames: int | None, start: int, stop: int | None, step: int) -> int | None:
    """How many frames ``frames(start, stop, step)`` yields (None when the length is unknown)."""
    end = stop if num_frames is None else (num_frames if stop is None else min(stop, num_frames))
    if end is None:
        return None
    return max(0, -(-(end - start) // step))


class FrameSource:
    """A video's frames, decoded one at a time (see the module docstring)."""

    info: VideoInfo
    max_pixels: int | None
    max_frames: int | None

    def _check_budget(self, start: int, stop: int | None, step: int) -> None:
        info = self.info
        if self.max_pixels is not None and info.width * info.height > self.max_pixels:
            raise VideoTooLargeError(
                f"{info.path}: frames are {info.width}x{info.height} = "
                f"{info.width * info.height:,} pixels, more than the cap of {self.max_pixels:,}. "
                "Resize the video first, or raise max_pixels if you trust it."
            )
        count = selected_count(info.num_frames, start, stop, step)
        if self.max_frames is not None and count is not None and count > self.max_frames:
            raise VideoTooLargeError(
                f"{info.path}: the selection has {count:,} frames, more than the cap of "
                f"{self.max_frames:,}. Select a range (first/last frame, a step) or raise "
                "max_frames."
            )

    def _too_many(self, yielded: int) -> None:
        if self.max_frames is not None and yielded > self.max_frames:
            raise VideoTooLargeError(
                f"{self.info.path}: more than {self.max_frames:,} frames selected (the "
                "container did not state its length). Select a range or raise max_frames."
            )

    def frames(
        self, start: int = 0, stop: int | None = None, step: int = 1
    ) -> Iterator[VideoFrame]:
        """Frames ``start, start + step, ...`` before ``stop`` (all when None), one at a time."""
        _check_range(start, stop, step)
        self._check_budget(start, stop, step)
        return self._frames(int(start), None if stop is None else int(stop), int(step))

    def _frames(self, start: int, stop: int | None, step: int) -> Iterator[VideoFrame]:
        raise NotImplementedError

    def __len__(self) -> int:
        if self.info.num_frames is None:
            raise TypeError(f"{self.info.path} does not state its number of frames.")
        return self.info.num_frames


# ---------------------------------------------------------------------------------- PyAV
def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a core dependency
        from ovseg.errors import MissingDependencyError

        raise MissingDependencyError(
            "Reading and writing videos needs PyAV: `pip install ovseg[video]` (or `pip install av`)."
        ) from exc
    return av


def _av_error(path: str, exc: Exception, during: str) -> VideoReadError:
    reason = str(exc).strip() or type(exc).__name__
    return VideoReadError(
        f"{path}: cannot {during} ({reason}). The file is damaged or not a video PyAV/FFmpeg "
        f"can decode; supported containers: {', '.join(VIDEO_SUFFIXES)}, or a frame folder."
    )


class PyAVFrameSource(FrameSource):
    """Frames of a video file through PyAV (FFmpeg), decoded as a stream.

    Args:
        path: the video file.
        max_pixels: cap on ``width x height`` of a frame (None: no cap).
        max_frames: cap on the frames one :meth:`frames` call yields (None: no cap).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_frames: int | None = DEFAULT_MAX_FRAMES,
    ) -> None:
        av = _import_av()
        self.path = Path(path)
        self.max_pixels, self.max_frames = max_pixels, max_frames
        if not self.path.is_file():
            raise VideoReadError(f"{self.path}: no such video file.")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise VideoReadError(f"{self.path}: the file holds no video stream.")
                stream = container.streams.video[0]
                width, height = int(stream.width or 0), int(stream.height or 0)
                count = int(stream.frames or 0) or None
                rate = stream.average_rate or stream.guessed_rate
                fps = float(rate) if rate else None
        except VideoReadError:
            raise
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise _av_error(str(self.path), exc, "open the video") from exc
        if width <= 0 or height <= 0:
            raise VideoReadError(f"{self.path}: the video stream states no frame size.")
        self.info = VideoInfo(str(self.path), width, height, count, fps, "container")

    def _frames(self, start: int, stop: int | None, step: int) -> Iterator[VideoFrame]:
        av = _import_av()
        index = -1
        yielded = 0
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                time_base = stream.time_base
                for frame in container.decode(stream):
                    index += 1
                    if stop is not None and index >= stop:
                        return
                    if index < start or (index - start) % step:
                        continue
                    yielded += 1
                    self._too_many(yielded)
                    if frame.width * frame.height > (self.max_pixels or float("inf")):
                        raise VideoTooLargeError(
                            f"{self.path}: frame {index} is {frame.width}x{frame.height}, over "
                            f"the cap of {self.max_pixels:,} pixels."
                        )
                    pts = frame.pts if frame.pts is not None else frame.dts
                    base = frame.time_base or time_base
                    time = float(pts * base) if pts is not None and base is not None else None
                    image = frame.to_ndarray(format="rgb24")
                    yield VideoFrame(index, time, np.ascontiguousarray(image), f"{index:05d}")
        except (av.FFmpegError, OSError) as exc:
            raise _av_error(str(self.path), exc, f"decode frame {index + 1}") from exc


# ---------------------------------------------------------------------------------- folders
def _natural_key(name: str) -> list[Any]:
    """``frame2.jpg`` before ``frame10.jpg``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", name)]


class FolderFrameSource(FrameSource):
    """Frames stored as image files in one folder, in natural name order.

    Args:
        path: the folder (hidden files and other suffixes are ignored).
        fps: frame rate for timestamps (``index / fps``); None: frames have no time.
        max_pixels, max_frames: as :class:`PyAVFrameSource`; every frame is checked, the first
            one's size is the video's.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_frames: int | None = DEFAULT_MAX_FRAMES,
    ) -> None:
        self.path = Path(path)
        self.max_pixels, self.max_frames = max_pixels, max_frames
        if not self.path.is_dir():
            raise VideoReadError(f"{self.path}: no such frame folder.")
        if fps is not None and not float(fps) > 0:
            raise ConfigError(f"fps must be > 0, got {fps!r}.")
        self.files = sorted(
            (
                p
                for p in self.path.iterdir()
                if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".") and p.is_file()
            ),
            key=lambda p: _natural_key(p.name),
        )
        if not self.files:
            raise VideoReadError(
                f"{self.path}: the folder holds no frame image ({', '.join(FRAME_SUFFIXES)})."
            )
        width, height = self._size(self.files[0])
        self.fps = None if fps is None else float(fps)
        self.info = VideoInfo(str(self.path), width, height, len(self.files), self.fps, "folder")

    @staticmethod
    def _size(path: Path) -> tuple[int, int]:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1])
        except (OSError, UnidentifiedImageError) as exc:
            raise VideoReadError(f"{path}: not a readable frame image ({exc}).") from exc

    def _frames(self, start: int, stop: int | None, step: int) -> Iterator[VideoFrame]:
        end = len(self.files) if stop is None else min(stop, len(self.files))
        for index in range(start, end, step):
            path = self.files[index]
            try:
                image = read_image(path, max_pixels=self.max_pixels)
            except ImageReadError as exc:
                raise VideoReadError(f"{path}: frame {index} cannot be read: {exc}") from exc
            if image.shape[:2] != (self.info.height, self.info.width):
                raise VideoReadError(
                    f"{path}: frame {index} is {image.shape[1]}x{image.shape[0]}, the first "
                    f"frame {self.info.width}x{self.info.height}; a video's frames share one size."
                )
            time = None if self.fps is None else index / self.fps
            yield VideoFrame(index, time, image, path.name)


def is_video_input(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a video: a file with a video suffix, or a folder of frames."""
    path = Path(path)
    return path.suffix.lower() in VIDEO_SUFFIXES or path.is_dir()


def open_video(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_frames: int | None = DEFAULT_MAX_FRAMES,
) -> FrameSource:
    """A :class:`FrameSource` for a video file or a frame folder (``fps`` only for folders)."""
    path = Path(path)
    if path.is_dir():
        return FolderFrameSource(path, fps=fps, max_pixels=max_pixels, max_frames=max_frames)
    if not path.exists():
        raise VideoReadError(f"{path}: no such video file or frame folder.")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise VideoReadError(
            f"{path}: unsupported video type {path.suffix or '(no suffix)'!r}; give one of "
            f"{', '.join(VIDEO_SUFFIXES)} or a folder of frame images."
        )
    return PyAVFrameSource(path, max_pixels=max_pixels, max_frames=max_frames)


# ---------------------------------------------------------------------------------- writing
class VideoWriter:
    """Write RGB frames to an H.264 MP4 (``libx264``, ``yuv420p``; MPEG-4 Part 2 when libx264
    is absent) under a temporary name, renamed onto ``path`` by :meth:`close`.

    Odd frame sides are padded by one edge pixel (yuv420p needs even sides). Use as a context
    manager; an exception leaves ``path`` untouched.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 10.0, crf: int = 23) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = int(crf)
        self._atomic = atomic_path(self.path)
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> VideoWriter:
        self._tmp = self._atomic.__enter__()
        return self

    def _open(self, height: int, width: int) -> None:
        av = _import_av()
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=self.fps)
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": str(self.crf)}
        self._size = (height, width)

    def write(self, image: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame (every frame the size of the first)."""
        av = _import_av()
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ConfigError(f"Video frames are (H, W, 3) uint8, got {image.shape} {image.dtype}.")
        if self._container is None:
            self._open(*image.shape[:2])
        if image.shape[:2] != self._size:
            raise ConfigError(f"Frame of size {image.shape[:2]} in a {self._size} video.")
        pad = ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0))
        frame = av.VideoFrame.from_ndarray(np.pad(image, pad, mode="edge"), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            if self._container is not None:
                if exc_type is None:
                    for packet in self._stream.encode():
                        self._container.mux(packet)
                self._container.close()
            elif exc_type is None:
                raise ConfigError(f"No frame was written to {self.path}.")
        except BaseException as error:
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise
        return bool(self._atomic.__exit__(exc_type, exc, tb))
