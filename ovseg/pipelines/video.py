"""Open-vocabulary video segmentation: objects found by an image pipeline, followed over time.

``VideoSegmenter`` wraps a built image pipeline, the *detector*: a referring pipeline (a phrase
-> one mask) or an instance pipeline (a vocabulary -> named masks). For a video (a file or a
frame folder, read by :mod:`ovseg.io_video`, one frame at a time):

* ``propagation: sam2``: the detector runs on the first processed frame (the keyframe) and,
  with ``redetect_every: K > 0``, again on every K-th processed frame. Every detected object is
  followed by SAM 2's video memory (:class:`~ovseg.models.decoders.sam2_video.Sam2MemoryTracker`,
  a bounded memory bank per object) using the detector's own SAM 2 model. On a re-detection
  frame the detections are matched to the live tracks by mask IoU (``matching``:
  ``hungarian`` / ``greedy``, pairs with IoU >= ``match_threshold``, same class with
  ``class_aware``); a matched track keeps its propagated mask and takes the detection's score,
  an unmatched detection starts a new track (new id, prompted into SAM 2 with its mask).
  Needs a SAM 2 mask decoder (``Sam2Decoder``), e.g. the ``sam2.1-hiera-*`` presets.
* ``propagation: redetect``: the detector runs on every processed frame and the detections
  (after a class-agnostic mask NMS, ``detection_nms``) are linked to the live tracks by the same mask-IoU matching
  (:class:`~ovseg.inference.tracking.TrackManager`). Works with any SAM (the embedded
  ``shapes-tiny`` SAM has no video memory, so this is its video mode).

A track is absent on a frame when its mask has fewer than ``min_area`` pixels (SAM 2: also when
its object score logit is <= 0), or, on a detection frame, when no detection matched it; it ends
after more than ``patience`` consecutive absent frames. Ids start at 1 and are never reused.
A frame's score of a track is the score of the detection that last matched it (instance
pipeline: class probability x SAM's predicted IoU; referring: SAM's predicted IoU).

Frames given to SAM 2 are numbered by processing order (0, 1, ... over the selected range and
step), so its memory reads the previous *processed* frames.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovseg.errors import ConfigError, PromptError
from ovseg.inference.tracking import MATCHERS, TrackManager, mask_iou_matrix, match_by_iou
from ovseg.io import DEFAULT_MAX_PIXELS
from ovseg.io_video import (
    DEFAULT_MAX_FRAMES,
    FrameSource,
    VideoInfo,
    open_video,
    selected_count,
)
from ovseg.registry import PIPELINES

__all__ = ["PROPAGATIONS", "VideoFrameResult", "VideoRun", "VideoSegmenter"]

PROPAGATIONS = ("sam2", "redetect")


@dataclass
class VideoFrameResult:
    """The tracks present on one frame.

    Attributes:
        index, time, name: the frame (see :class:`ovseg.io_video.VideoFrame`).
        image: ``(H, W, 3)`` uint8 RGB, the frame.
        track_ids: ``(N,)`` int64 track ids (>= 1).
        masks: ``(N, H, W)`` bool in input pixels.
        scores: ``(N,)`` float32.
        labels: ``(N,)`` int64 index into ``class_names``.
        detected: whether the detector ran on this frame.
    """

    index: int
    time: float | None
    name: str
    image: np.ndarray
    track_ids: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    detected: bool = False

    def __len__(self) -> int:
        return len(self.track_ids)


@dataclass
class _Detections:
    masks: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class VideoRun:
    """One pass over a video: iterate it for :class:`VideoFrameResult` objects, in order.

    ``class_names`` is known before the first frame for an instance vocabulary; for a phrase it
    is ``[phrase]``."""

    info: VideoInfo
    task: str
    query: Any
    class_names: list[str]
    num_frames: int | None
    _frames: Iterator[VideoFrameResult] = field(repr=False)

    def __iter__(self) -> Iterator[VideoFrameResult]:
        return self._frames


@PIPELINES.register()
class VideoSegmenter:
    """Video segmentation and tracking over an image pipeline (see the module docstring).

    Args:
        detector: a built referring or instance pipeline (``query_name`` ``phrase`` or
            ``vocabulary``).
        propagation: ``sam2`` or ``redetect``.
        redetect_every: with ``sam2``, run the detector every K processed frames (0: only on the
            keyframe); ``redetect`` detects on every frame (0 or 1 only).
        match_threshold: mask IoU a detection needs to continue a track.
        matching: ``hungarian`` or ``greedy``.
        patience: absent frames a track survives before it ends.
        class_aware: match only detections of the track's class (default off: the class of
            an object may flicker between frames; the tracks file names a track by its
            score-weighted class vote).
        score_threshold: detections scored lower are ignored.
        detection_nms: class-agnostic mask NMS of a frame's detections before matching: a
            detection whose mask IoU with a higher-scored one exceeds this is dropped (the
            instance pipeline's NMS is per class, so one object can come back under several
            names); None keeps them all.
        min_area: pixels a mask needs to count as present.
        fill_hole_area: SAM 2's hole filling of low-resolution masks (its video predictor: 8).
        max_pixels, max_frames: the video budget (frame size; frames one run processes).
    """

    def __init__(
        self,
        detector: Any,
        propagation: str = "redetect",
        redetect_every: int = 0,
        match_threshold: float = 0.5,
        matching: str = "hungarian",
        patience: int = 0,
        class_aware: bool = False,
        score_threshold: float = 0.0,
        detection_nms: float | None = 0.5,
        min_area: int = 1,
        fill_hole_area: float = 8.0,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_frames: int | None = DEFAULT_MAX_FRAMES,
    ) -> None:
        if detector is None or not hasattr(detector, "encode"):
            raise ConfigError("VideoSegmenter needs a built referring or instance pipeline.")
        if propagation not in PROPAGATIONS:
            raise ConfigError(f"propagation must be one of {PROPAGATIONS}, not {propagation!r}.")
        if matching not in MATCHERS:
            raise ConfigError(f"matching must be one of {MATCHERS}, not {matching!r}.")
        redetect_every = int(redetect_every)
        if redetect_every < 0:
            raise ConfigError(f"redetect_every must be >= 0 frames, got {redetect_every}.")
        if propagation == "redetect" and redetect_every > 1:
            raise ConfigError(
                "propagation 'redetect' detects on every frame; redetect_every > 1 needs "
                "propagation 'sam2' (SAM 2 memory between detections)."
            )
        self.detector = detector
        self.task = "referring" if getattr(detector, "query_name", "") == "phrase" else "instance"
        self.propagation = propagation
        self.redetect_every = redetect_every
        self.match_threshold = float(match_threshold)
        self.matching = matching
        self.patience = int(patience)
        self.class_aware = bool(class_aware)
        self.score_threshold = float(score_threshold)
        if detection_nms is not None and not 0.0 < float(detection_nms) <= 1.0:
            raise ConfigError(f"detection_nms must lie in (0, 1] or be null, got {detection_nms}.")
        self.detection_nms = None if detection_nms is None else float(detection_nms)
        self.min_area = max(1, int(min_area))
        self.fill_hole_area = float(fill_hole_area)
        self.max_pixels = max_pixels
        self.max_frames = max_frames
        TrackManager(self.match_threshold, matching, self.patience)  # checks the settings
        if propagation == "sam2":
            self._sam2_model()  # refuse a detector without SAM 2 now, not on the first frame
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    # ------------------------------------------------------------------ parts
    def _sam2_model(self) -> Any:
        decoder = getattr(self.detector, "decoder", None)
        model = getattr(decoder, "model", None)
        if model is None or not hasattr(model, "track_step"):
            raise ConfigError(
                f"propagation 'sam2' needs a SAM 2 mask decoder (Sam2Decoder); this detector's "
                f"decoder is {type(decoder).__name__}, which has no video memory. Use "
                "propagation 'redetect' (detection on every frame, linked by mask IoU) or a "
                "SAM 2 preset (sam2.1-hiera-tiny ...)."
            )
        return model

    def _class_names(self, query: Any) -> tuple[Any, list[str]]:
        if self.task == "referring":
            if not isinstance(query, str) or not query.strip():
                raise PromptError("Give the phrase to segment in the video, e.g. 'the red star'.")
            return query, [query]
        vocab = self.detector.resolve_vocabulary(query)
        return vocab, list(vocab.names)

    def _detect(self, image: np.ndarray, query: Any) -> _Detections:
        height, width = image.shape[:2]
        result = self.detector(image, query)
        if self.task == "referring":
            mask = np.asarray(result.mask, dtype=bool)
            if mask.sum() < self.min_area or float(result.score) < self.score_threshold:
                mask = mask[None][:0]
            else:
                mask = mask[None]
            return _Detections(
                mask,
                np.full(len(mask), float(result.score), np.float32),
                np.zeros(len(mask), np.int64),
            )
        masks = np.asarray(result.masks, dtype=bool).reshape(-1, height, width)
        keep = masks.reshape(len(masks), height * width).sum(1) >= self.min_area
        keep &= np.asarray(result.scores, np.float32) >= self.score_threshold
        masks = masks[keep]
        scores = np.asarray(result.scores, np.float32)[keep]
        labels = np.asarray(result.labels, np.int64)[keep]
        if self.detection_nms is not None and len(masks) > 1:
            order = np.argsort(-scores, kind="stable")
            iou = mask_iou_matrix(masks[order], masks[order])
            kept: list[int] = []
            for i in range(len(order)):
                if all(iou[i, j] <= self.detection_nms for j in kept):
                    kept.append(i)
            chosen = order[kept]
            masks, scores, labels = masks[chosen], scores[chosen], labels[chosen]
        return _Detections(masks, scores, labels)

    def open(
        self,
        video: str | os.PathLike | FrameSource,
        *,
        fps: float | None = None,
    ) -> FrameSource:
        """The frame source of ``video`` under this pipeline's budget."""
        if isinstance(video, FrameSource):
            return video
        return open_video(video, fps=fps, max_pixels=self.max_pixels, max_frames=self.max_frames)

    # ------------------------------------------------------------------ entry points
    def track(
        self,
        video: str | os.PathLike | FrameSource,
        query: Any = None,
        *,
        start: int = 0,
        stop: int | None = None,
        step: int = 1,
        fps: float | None = None,
    ) -> VideoRun:
        """Segment and track ``query`` (phrase or vocabulary) over the selected frames.

        The source and the query are checked (and the budget) before this returns; frames are
        decoded and processed as the returned :class:`VideoRun` is iterated."""
        source = self.open(video, fps=fps)
        query, names = self._class_names(query)
        frames = source.frames(start, stop, step)  # checks the range and the budget now
        count = selected_count(source.info.num_frames, start, stop, step)
        if self.propagation == "sam2":
            iterator = self._track_sam2(frames, query, names, count)
        else:
            iterator = self._track_redetect(frames, query, names)
        return VideoRun(source.info, self.task, query, names, count, iterator)

    def __call__(self, video: Any, query: Any = None, **kwargs: Any) -> list[VideoFrameResult]:
        """Every frame's result as a list (short clips; :meth:`track` streams)."""
        return list(self.track(video, query, **kwargs))

    # ------------------------------------------------------------------ redetect
    def _track_redetect(
        self, frames: Iterator[Any], query: Any, names: list[str]
    ) -> Iterator[VideoFrameResult]:
        manager = TrackManager(self.match_threshold, self.matching, self.patience, self.class_aware)
        for frame in frames:
            found = self._detect(frame.image, query)
            seen = manager.update(found.masks, found.scores, found.labels)
            seen.sort(key=lambda pair: pair[0].id)
            yield self._result(
                frame,
                [t.id for t, _ in seen],
                [found.masks[c] for _, c in seen],
                [found.scores[c] for _, c in seen],
                [found.labels[c] for _, c in seen],
                names,
                detected=True,
            )

    # ------------------------------------------------------------------ SAM 2
    def _track_sam2(
        self, frames: Iterator[Any], query: Any, names: list[str], count: int | None
    ) -> Iterator[VideoFrameResult]:
        from ovseg.models.decoders.sam2_video import Sam2MemoryTracker

        tracker = Sam2MemoryTracker(self._sam2_model(), self.fill_hole_area, num_frames=count)
        live: dict[int, dict[str, Any]] = {}  # id -> {"label", "score", "misses"}
        next_id = 1
        for position, frame in enumerate(frames):
            features = tracker.encode_frame(position, frame.image)
            propagated = tracker.propagate(features)
            masks: dict[int, np.ndarray] = {}
            for object_id, (logits, object_score) in propagated.items():
                mask = (logits > 0).cpu().numpy()
                if object_score > 0 and mask.sum() >= self.min_area:
                    masks[object_id] = mask
            detect = position == 0 or (
                self.redetect_every > 0 and position % self.redetect_every == 0
            )
            matched: set[int] = set()
            if detect:
                found = self._detect(frame.image, query)
                ids = sorted(masks)
                pairs: list[tuple[int, int]] = []
                if ids and len(found.masks):
                    iou = mask_iou_matrix(np.stack([masks[i] for i in ids]), found.masks)
                    if self.class_aware:
                        same = np.array(
                            [[live[i]["label"] == int(lab) for lab in found.labels] for i in ids]
                        )
                        iou = np.where(same, iou, 0.0)
                    pairs = match_by_iou(iou, self.match_threshold, self.matching)
                used = set()
                for r, c in pairs:
                    live[ids[r]]["score"] = float(found.scores[c])
                    matched.add(ids[r])
                    used.add(c)
                for c in range(len(found.masks)):
                    if c in used:
                        continue
                    logits = tracker.add_object(next_id, features, found.masks[c])
                    mask = (logits > 0).cpu().numpy()
                    live[next_id] = {
                        "label": int(found.labels[c]),
                        "score": float(found.scores[c]),
                        "misses": 0,
                    }
                    if mask.sum() >= self.min_area:
                        masks[next_id] = mask
                        matched.add(next_id)
                    next_id += 1
            for object_id in list(live):
                present = object_id in masks and (not detect or object_id in matched)
                if present:
                    live[object_id]["misses"] = 0
                    continue
                masks.pop(object_id, None)
                live[object_id]["misses"] += 1
                if live[object_id]["misses"] > self.patience:
                    del live[object_id]
                    tracker.remove_object(object_id)
            ids = sorted(masks)
            yield self._result(
                frame,
                ids,
                [masks[i] for i in ids],
                [live[i]["score"] for i in ids],
                [live[i]["label"] for i in ids],
                names,
                detected=detect,
            )

    @staticmethod
    def _result(
        frame: Any,
        ids: Sequence[int],
        masks: Sequence[np.ndarray],
        scores: Sequence[float],
        labels: Sequence[int],
        names: list[str],
        detected: bool,
    ) -> VideoFrameResult:
        height, width = frame.image.shape[:2]
        return VideoFrameResult(
            index=frame.index,
            time=frame.time,
            name=frame.name,
            image=frame.image,
            track_ids=np.asarray(ids, dtype=np.int64),
            masks=np.stack(masks) if len(masks) else np.zeros((0, height, width), dtype=bool),
            scores=np.asarray(scores, dtype=np.float32),
            labels=np.asarray(labels, dtype=np.int64),
            class_names=names,
            detected=detected,
        )
