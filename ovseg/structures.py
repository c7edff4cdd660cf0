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
        probs: ``(C, H, W)`` float32 class probabilities (softmax over the vocabulary), or None.
        meta: free-form information (preset, timings, ...).
    """

    sem_seg: np.ndarray
    class_names: list[str]
    probs: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

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
        for index, name in enumerate(self.class_names):
            mask = self.sem_seg == index
            if self.probs is None or not mask.any():
                scores[name] = None
            else:
                scores[name] = round(float(self.probs[index][mask].mean()), 6)
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
