"""Synthetic scenes as box-detection samples, generated on the fly (no files).

``SyntheticDetectionDataset(num, seed, split)`` yields scene ``i`` of ``split`` under ``seed``
(the same scene ``ovseg data synth`` writes for that seed, split and index) as
``{"image": (H, W, 3) uint8 RGB, "boxes": (N, 4) float32 XYXY pixels of the visible object
pixels (exclusive right / bottom), "class_ids": (N,) int64 thing indices into
``THING_CLASSES``, "filename": str}``, passed through ``transform`` when one is given. Training scenes hold seen classes only (the generator
never draws an unseen pair for ``split="train"``).

``cache=True`` keeps generated scenes in memory, so later epochs cost no generation (about
50 KB per 128 px scene; the cache lives in the process that reads the dataset, so use it with
``num_workers: 0``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ovseg.data.synthetic import generate_scene, scene_rng
from ovseg.data.synthetic_vocab import THING_CLASSES, UNSEEN_CLASSES
from ovseg.registry import DATASETS

__all__ = ["SyntheticDetectionDataset"]


@DATASETS.register()
class SyntheticDetectionDataset:
    """Scenes of the synthetic world with their object boxes (see the module docstring)."""

    def __init__(
        self,
        num: int = 1000,
        seed: int = 0,
        split: str = "train",
        image_size: int = 128,
        cache: bool = False,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        if int(num) <= 0:
            raise ValueError(f"num must be a positive number of scenes, got {num!r}.")
        scene_rng(seed, split, 0)  # checks the split name
        self.num, self.seed, self.split = int(num), int(seed), split
        self.image_size = int(image_size)
        self.class_names = list(THING_CLASSES)
        self.unseen = list(UNSEEN_CLASSES)
        self.transform = transform
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> Any:
        sample = self.sample(index)
        return self.transform(sample) if self.transform is not None else sample

    def sample(self, index: int) -> dict[str, Any]:
        """Scene ``index`` as a sample, before ``transform``."""
        if not 0 <= index < self.num:
            raise IndexError(f"index {index} out of range for {self.num} scenes")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        scene = generate_scene(
            scene_rng(self.seed, self.split, index), image_size=self.image_size, split=self.split
        )
        sample = {
            "image": scene.image,
            "boxes": scene.boxes.astype(np.float32),
            "class_ids": scene.class_ids.astype(np.int64),
            "filename": f"synthetic_{self.split}_{index:08d}",
        }
        if self._cache is not None:
            self._cache[index] = sample
        return sample
