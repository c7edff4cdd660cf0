"""Reasoning-segmentation samples from the synthetic world: a scene and questions about it.

Each item is one scene (:func:`ovseg.data.synthetic.generate_scene`, the same scenes as
:class:`~ovseg.data.synthetic.SyntheticSceneDataset` for equal ``seed``/``split``/``index``) with
questions from :mod:`ovseg.data.reasoning_queries` (the user's message; the conversation template
puts the ``<image>`` line before it)::

    {"image": (H, W, 3) uint8 RGB,
     "filename": "synthetic_reasoning_<split>_<index>",
     "queries": [{"question": "What is the shape above the red star in this image? ...",
                  "answer": "Sure, it is [SEG].",
                  "text": "the shape above the red star",
                  "masks": (n, H, W) bool, one per [SEG] of the answer,
                  "ignore": None (every pixel is scored),
                  "kind": "relation", "group": "seen" | "unseen"}, ...]}

Training takes ``queries_per_scene`` queries per scene (as LISA samples up to 3 sentences per
image), drawn deterministically from ``(seed, split, index)``; evaluation (``queries_per_scene:
null``) takes every unambiguous query of the scene. Several targets make one ``[SEG]`` over
their union by default (``multi_target: union``, as a ReasonSeg query has one mask), or one
``[SEG]`` each (``multi_target: per_object``, "Sure, they are [SEG] and [SEG].").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ovseg.data.reasoning_queries import (
    ANSWERS,
    DEFAULT_ANSWER,
    LONG_QUESTIONS,
    QUERY_KINDS,
    SHORT_QUESTIONS,
    Query,
    answer_text,
    check_kinds,
    question_text,
    sample_queries,
    scene_queries,
)
from ovseg.data.synthetic import SPLIT_CODES, Scene, generate_scene, scene_rng
from ovseg.data.synthetic_vocab import UNSEEN_CLASSES
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

MULTI_TARGET = ("union", "per_object")
WORDINGS = ("fixed", "varied")


@DATASETS.register(aliases=("synthetic_reasoning",))
class SyntheticReasoningDataset:
    """Synthetic scenes with referring / reasoning questions (see the module docstring).

    Args:
        num: number of scenes.
        seed, split, image_size: of the scenes (``train`` scenes hold seen classes only).
        queries_per_scene: questions per item; None: every query of the scene.
        kinds: query kinds to ask (subset of ``QUERY_KINDS``).
        multi_target: ``union`` (one mask per query) or ``per_object`` (one per target).
        wording: ``fixed`` (the first question template, answer "Sure, it is [SEG].") or
            ``varied`` (LISA's question and answer templates, drawn per query).
        transform: applied to every item dict (the training task's preprocessing).
    """

    def __init__(
        self,
        num: int = 100,
        seed: int = 0,
        split: str = "train",
        image_size: int = 128,
        queries_per_scene: int | None = 3,
        kinds: Sequence[str] = QUERY_KINDS,
        multi_target: str = "union",
        wording: str = "fixed",
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        if split not in SPLIT_CODES:
            raise DatasetError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}.")
        if multi_target not in MULTI_TARGET:
            raise DatasetError(f"multi_target must be one of {MULTI_TARGET}, got {multi_target!r}.")
        if wording not in WORDINGS:
            raise DatasetError(f"wording must be one of {WORDINGS}, got {wording!r}.")
        if queries_per_scene is not None and int(queries_per_scene) < 1:
            raise DatasetError(f"queries_per_scene must be >= 1 or null, got {queries_per_scene}.")
        try:
            self.kinds = check_kinds(list(kinds))
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        self.num, self.seed, self.split = int(num), int(seed), split
        self.image_size = int(image_size)
        self.queries_per_scene = None if queries_per_scene is None else int(queries_per_scene)
        self.multi_target, self.wording, self.transform = multi_target, wording, transform
        self.unseen = list(UNSEEN_CLASSES)

    def __len__(self) -> int:
        return self.num

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.num:
            raise IndexError(f"index {index} out of range for {self.num} scenes")
        return generate_scene(
            scene_rng(self.seed, self.split, index), image_size=self.image_size, split=self.split
        )

    def queries(self, index: int, scene: Scene) -> list[Query]:
        """The queries of item ``index`` (deterministic given seed, split and index)."""
        if self.queries_per_scene is None:
            return scene_queries(scene, self.kinds)
        rng = np.random.default_rng([self.seed, SPLIT_CODES[self.split], int(index), 1])
        return sample_queries(scene, self.queries_per_scene, rng, self.kinds)

    def _record(self, query: Query, scene: Scene, rng: np.random.Generator) -> dict[str, Any]:
        masks = query.masks(scene)
        if self.multi_target == "union":
            masks = masks.any(axis=0, keepdims=True)
        if self.wording == "varied":
            questions = SHORT_QUESTIONS if query.kind == "class" else LONG_QUESTIONS
            question = question_text(query, questions[int(rng.integers(len(questions)))])
            template = ANSWERS[int(rng.integers(len(ANSWERS)))]
        else:
            question, template = question_text(query), DEFAULT_ANSWER
        return {
            "question": question,
            "answer": answer_text(len(masks), template),
            "text": query.text,
            "masks": masks,
            "ignore": None,
            "kind": query.kind,
            "group": query.group,
        }

    def raw_item(self, index: int) -> dict[str, Any]:
        """Item ``index`` before ``transform``."""
        scene = self.scene(index)
        rng = np.random.default_rng([self.seed, SPLIT_CODES[self.split], int(index), 2])
        return {
            "image": scene.image,
            "filename": f"synthetic_reasoning_{self.split}_{index:08d}",
            "queries": [self._record(q, scene, rng) for q in self.queries(index, scene)],
        }

    def __getitem__(self, index: int) -> Any:
        item = self.raw_item(index)
        return self.transform(item) if self.transform is not None else item

    def query_samples(self, index: int) -> list[tuple[np.ndarray, str, str, np.ndarray, dict]]:
        """Item ``index`` as ``(image, question, answer, masks (n, H, W) bool, meta)`` tuples,
        one per query; ``meta`` holds ``text``, ``kind``, ``group`` and ``filename``."""
        item = self.raw_item(index)
        return [
            (
                item["image"],
                q["question"],
                q["answer"],
                q["masks"],
                {
                    "text": q["text"],
                    "kind": q["kind"],
                    "group": q["group"],
                    "filename": item["filename"],
                },
            )
            for q in item["queries"]
        ]
