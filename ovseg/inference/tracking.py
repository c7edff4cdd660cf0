"""Track identities over a video: mask-IoU matching of detections to live tracks.

A :class:`TrackManager` holds the live tracks (id, class label, current mask, frames since last
seen). Each :meth:`TrackManager.update` takes the frame's detections (``(N, H, W)`` bool masks
in input pixels, scores, labels) and

1. computes the mask IoU of every live track's current mask with every detection;
2. matches them one-to-one (``hungarian``: the assignment maximising the summed IoU,
   ``scipy.optimize.linear_sum_assignment``; ``greedy``: highest IoU pair first), keeping only
   pairs with IoU >= ``iou_threshold`` (and, with ``class_aware``, the same label);
3. a matched track takes the detection's mask and score; an unmatched detection opens a new
   track with the next id (ids start at 1, never reused); an unmatched track counts one miss and
   ends after more than ``patience`` consecutive misses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ovseg.errors import ConfigError

__all__ = ["MATCHERS", "Track", "TrackManager", "match_by_iou", "mask_iou_matrix"]

MATCHERS = ("hungarian", "greedy")


def mask_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``(N, M)`` of ``(N, H, W)`` and ``(M, H, W)`` bool masks (0 where both are empty)."""
    a = np.asarray(a, dtype=bool).reshape(len(a), -1).astype(np.float32)
    b = np.asarray(b, dtype=bool).reshape(len(b), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def match_by_iou(
    iou: np.ndarray, threshold: float, method: str = "hungarian"
) -> list[tuple[int, int]]:
    """One-to-one ``(row, column)`` pairs with IoU >= ``threshold`` (see the module docstring)."""
    if method not in MATCHERS:
        raise ConfigError(f"matching must be one of {MATCHERS}, not {method!r}.")
    if iou.size == 0:
        return []
    if method == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-iou)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= threshold]
    pairs = []
    taken_rows: set[int] = set()
    taken_cols: set[int] = set()
    order = np.argsort(-iou, axis=None, kind="stable")
    for flat in order:
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < threshold:
            break
        if r in taken_rows or c in taken_cols:
            continue
        pairs.append((r, c))
        taken_rows.add(r)
        taken_cols.add(c)
    return sorted(pairs)


@dataclass
class Track:
    """A live track: ``mask`` ``(H, W)`` bool is its latest mask."""

    id: int
    label: int
    score: float
    mask: np.ndarray
    misses: int = 0


class TrackManager:
    """Live tracks updated frame by frame (see the module docstring)."""

    def __init__(
        self,
        iou_threshold: float = 0.5,
        matching: str = "hungarian",
        patience: int = 0,
        class_aware: bool = True,
    ) -> None:
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ConfigError(f"match IoU threshold must lie in (0, 1], got {iou_threshold}.")
        if matching not in MATCHERS:
            raise ConfigError(f"matching must be one of {MATCHERS}, not {matching!r}.")
        if int(patience) < 0:
            raise ConfigError(f"patience must be >= 0 frames, got {patience}.")
        self.iou_threshold = float(iou_threshold)
        self.matching = matching
        self.patience = int(patience)
        self.class_aware = bool(class_aware)
        self.tracks: list[Track] = []
        self.next_id = 1

    def new_track(self, mask: np.ndarray, score: float, label: int) -> Track:
        track = Track(self.next_id, int(label), float(score), np.asarray(mask, dtype=bool))
        self.next_id += 1
        self.tracks.append(track)
        return track

    def update(
        self, masks: np.ndarray, scores: Sequence[float], labels: Sequence[int]
    ) -> list[tuple[Track, int]]:
        """Match detections to tracks; returns ``(track, detection index)`` of every track seen
        on this frame (matched or new). Ended tracks are dropped from :attr:`tracks`."""
        masks = np.asarray(masks, dtype=bool)
        live = list(self.tracks)
        if live and len(masks):
            iou = mask_iou_matrix(np.stack([t.mask for t in live]), masks)
            if self.class_aware:
                same = np.array([[t.label == int(lab) for lab in labels] for t in live])
                iou = np.where(same, iou, 0.0)
            pairs = match_by_iou(iou, self.iou_threshold, self.matching)
        else:
            pairs = []
        seen: list[tuple[Track, int]] = []
        matched_tracks = {r for r, _ in pairs}
        matched_dets = {c for _, c in pairs}
        for r, c in pairs:
            track = live[r]
            track.mask, track.score, track.misses = masks[c], float(scores[c]), 0
            seen.append((track, c))
        for r, track in enumerate(live):
            if r not in matched_tracks:
                track.misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.patience]
        for c in range(len(masks)):
            if c not in matched_dets:
                seen.append((self.new_track(masks[c], scores[c], labels[c]), c))
        return seen
