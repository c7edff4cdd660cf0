"""Result containers (pure data, no torch modules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNLABELLED = 255  # sem_seg value of pixels given no class (no background class, low confidence)


@dataclass
class OVSegResult:
    """Semantic segmentation of one image.

    Attributes:
        sem_seg: ``(H, W)`` int64 class index per pixel in vocabulary order, in input-image pixels;
            ``UNLABELLED`` (255) where no class was given.
        class_names: display names, in vocabulary order.
        probs: ``(C, h, w)`` float32 class probabilities (softmax over the vocabulary) at the
            pipeline's working resolution, which is the input size unless the image has more
            pixels than ``inference.max_work_pixels`` (then ``meta["working_size"]`` gives
            ``(h, w)``); None when the vocabulary was scored in chunks to bound memory.
        meta: free-form information (preset, timings, ...).
        label_scores: ``(H, W)`` float32 probability of each pixel's label (0 where
            ``UNLABELLED``), or None; :meth:`mean_scores` reads it before ``probs``.
    """

    sem_seg: np.ndarray
    class_names: list[str]
    probs: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    label_scores: np.ndarray | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.sem_seg.shape[0]), int(self.sem_seg.shape[1])

    def areas(self) -> dict[str, int]:
        """Pixel count of every class (classes with no pixel included, as 0)."""
        counts = np.bincount(
            self.sem_seg.ravel(), minlength=max(len(self.class_names), UNLABELLED + 1)
        )
        return {name: int(counts[i]) for i, name in enumerate(self.class_names)}

    def mean_scores(self) -> dict[str, float | None]:
        """Mean probability of each class over the pixels labelled with it (None if absent)."""
        scores: dict[str, float | None] = {}
        exact_probs = self.probs is not None and self.probs.shape[1:] == self.sem_seg.shape
        for index, name in enumerate(self.class_names):
            mask = self.sem_seg == index
            if not mask.any():
                scores[name] = None
            elif self.label_scores is not None:
                scores[name] = round(float(self.label_scores[mask].mean()), 6)
            elif exact_probs:
                scores[name] = round(float(self.probs[index][mask].mean()), 6)
            else:
                scores[name] = None
        return scores

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: classes, pixel areas, mean scores, image size."""
        areas, scores = self.areas(), self.mean_scores()
        total = float(self.sem_seg.size)
        return {
            "image_size": list(self.image_size),
            "classes": [
                {
                    "index": index,
                    "name": name,
                    "area": areas[name],
                    "area_fraction": round(areas[name] / total, 6),
                    "mean_score": scores[name],
                }
                for index, name in enumerate(self.class_names)
            ],
            "unlabelled_pixels": int((self.sem_seg == UNLABELLED).sum()),
            "meta": self.meta,
        }


@dataclass
class PointPrompts:
    """Point prompts for a mask decoder.

    Attributes:
        coords: ``(P, 2)`` float32 ``(x, y)`` in input-image pixels (continuous; pixel centres at
            ``i + 0.5``).
        labels: ``(P,)`` int64: 1 positive (foreground), 0 negative (background), -1 neutral
            (ignored by SAM's prompt encoder, kept so the selection can be displayed).
    """

    coords: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.float32).reshape(-1, 2)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.coords) != len(self.labels):
            raise ValueError(f"{len(self.coords)} point coordinates but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.labels)

    def sam_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """``(1, P, 2)`` coordinates in SAM's frame (pixel ``i`` at ``i``, so centres lose the
        half pixel) and ``(1, P)`` labels: one prompt of all the points."""
        return (self.coords - 0.5)[None], self.labels[None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "coords": [[round(float(x), 3), round(float(y), 3)] for x, y in self.coords],
            "labels": [int(v) for v in self.labels],
        }


@dataclass
class Instances:
    """Named instance masks of one image (instance segmentation / detection).

    Attributes:
        masks: ``(N, H, W)`` bool, in input-image pixels.
        boxes: ``(N, 4)`` float32 XYXY in input-image pixels (``x1, y1`` inclusive pixel edges,
            ``x2, y2`` exclusive, so a one-pixel mask at (x, y) has box ``x, y, x+1, y+1``).
        scores: ``(N,)`` float32 confidence in [0, 1].
        labels: ``(N,)`` int64 index into ``class_names``.
        class_names: display names, in vocabulary order.
        meta: free-form information (e.g. ``vocab_free``: the database and the filters the
            names went through); written to JSON when not empty.
    """

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.scores)
        if not (len(self.masks) == len(self.boxes) == len(self.labels) == n):
            raise ValueError(
                f"Instances need as many masks ({len(self.masks)}), boxes ({len(self.boxes)}) "
                f"and labels ({len(self.labels)}) as scores ({n})."
            )

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready list of instances (mask areas, not masks), and ``meta`` when not empty."""
        out: dict[str, Any] = {"meta": self.meta} if self.meta else {}
        return {
            **out,
            "instances": [
                {
                    "label": int(label),
                    "name": self.class_names[int(label)],
                    "score": round(float(score), 6),
                    "box_xyxy": [round(float(v), 2) for v in box],
                    "area": int(mask.sum()),
                }
                for mask, box, score, label in zip(
                    self.masks, self.boxes, self.scores, self.labels, strict=True
                )
            ],
        }


def _box_xyxy(mask: np.ndarray) -> list[int] | None:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@dataclass
class ReferringResult:
    """Text-prompted (referring) segmentation of one image.

    Attributes:
        mask: ``(H, W)`` bool, in input-image pixels.
        score: the mask decoder's predicted IoU of ``mask``.
        phrase: the query phrase.
        similarity: ``(H, W)`` float32 query-to-pixel similarity, min-max normalised to [0, 1].
        points: the point prompts given to the mask decoder.
    """

    mask: np.ndarray
    score: float
    phrase: str
    similarity: np.ndarray
    points: PointPrompts
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phrase": self.phrase,
            "score": round(float(self.score), 6),
            "area": int(self.mask.sum()),
            "box_xyxy": _box_xyxy(self.mask),
            "points": self.points.to_dict(),
            "meta": self.meta,
        }


@dataclass
class ReasoningResult:
    """Reasoning segmentation of one image: a generated answer and one mask per ``[SEG]`` in it.

    Attributes:
        question: the question asked.
        answer: the generated answer text (``[SEG]`` kept where the model placed it).
        masks: ``(K, H, W)`` bool, one per ``[SEG]`` of the answer (``K = 0``: text only).
        scores: ``(K,)`` float32, the mask decoder's predicted IoU of each mask.
        points: ``K`` point prompts (SasP) that produced the masks.
        similarity: ``K`` ``(h, w)`` float32 grids of raw ``[SEG]``-to-image-token similarity.
    """

    question: str
    answer: str
    masks: np.ndarray
    scores: np.ndarray
    points: list[PointPrompts] = field(default_factory=list)
    similarity: list[np.ndarray] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if self.masks.ndim != 3 or len(self.masks) != len(self.scores):
            raise ValueError(
                f"masks must be (K, H, W) with K scores; got {self.masks.shape} and "
                f"{len(self.scores)} scores."
            )
        if len(self.points) != len(self.scores):
            raise ValueError(f"{len(self.points)} point sets for {len(self.scores)} masks.")

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "num_masks": len(self),
            "masks": [
                {
                    "index": k,
                    "score": round(float(self.scores[k]), 6),
                    "area": int(self.masks[k].sum()),
                    "box_xyxy": _box_xyxy(self.masks[k]),
                    "points": self.points[k].to_dict(),
                }
                for k in range(len(self))
            ],
            "meta": self.meta,
        }


@dataclass
class Detections:
    """Scored boxes of one image.

    Attributes:
        boxes: ``(N, 4)`` float32 XYXY in input-image pixels (continuous edges: ``x2, y2`` are
            exclusive pixel edges, as :class:`~ovseg.structures.Instances`).
        scores: ``(N,)`` float32 in [0, 1], descending.
        query_indices: ``(N,)`` int64 index into ``queries``.
        labels: ``(N,)`` int64 class index (the query's class; equal to ``query_indices`` when
            every class has one query).
        queries: the query phrases.
        class_names: display name of each class.
        image_size: ``(H, W)`` of the input image.
        meta: free-form information (preset, task ...).

    Made by the open-vocabulary detectors (``ovseg.models.detectors``).
    """

    boxes: np.ndarray
    scores: np.ndarray
    query_indices: np.ndarray
    labels: np.ndarray
    queries: list[str]
    class_names: list[str]
    image_size: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.query_indices = np.asarray(self.query_indices, dtype=np.int64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.scores)
        if not (len(self.boxes) == len(self.query_indices) == len(self.labels) == n):
            raise ValueError("Detections need as many boxes, query indices and labels as scores.")

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready list of detections."""
        return {
            "image_size": list(self.image_size),
            "detections": [
                {
                    "label": int(label),
                    "name": self.class_names[int(label)],
                    "query": self.queries[int(query)],
                    "score": round(float(score), 6),
                    "box_xyxy": [round(float(v), 2) for v in box],
                }
                for box, score, query, label in zip(
                    self.boxes, self.scores, self.query_indices, self.labels, strict=True
                )
            ],
        }
