"""Semantic segmentation with named instance masks painted over a dense map.

A dense semantic map (training-free dense CLIP, DenseCLIP) labels every pixel but blurs the
edges of small objects and mixes neighbours; an instance pipeline on SAM's class-agnostic
proposals (masks named by CLIP) outlines objects well but says nothing about stuff. This
pipeline takes both for one image (HWC uint8 RGB, input-image pixels):

1. the semantic pipeline's ``(H, W)`` label map for the whole vocabulary;
2. the instance pipeline's named masks for the vocabulary's *thing* classes, i.e. every class
   except the stuff classes (``stuff``, default the instance pipeline's
   ``postprocess.background_classes``) and the vocabulary's background class;
3. the masks scoring at least ``min_score`` are painted over the map in ascending score order,
   so where masks overlap the best-scored one shows; each painted pixel takes the mask's class
   (its index in the whole vocabulary). Pixels under no mask keep the semantic label.

The result is an :class:`~ovseg.structures.OVSegResult` over the whole vocabulary, as the
semantic pipeline's; its ``probs`` are dropped (they no longer describe the labels) and its
``label_scores``, when the semantic map had them, hold the instance score on painted pixels.
``meta["painted_instances"]`` counts the masks painted.

Built from one config, the two pipelines share their CLIP when they name the same one (the
backbone registry builds equal configs once per build).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ovseg.errors import ConfigError
from ovseg.pipelines.base import EncodedImage, PromptablePipeline, VocabularyDefault, decode_like
from ovseg.registry import PIPELINES
from ovseg.structures import OVSegResult
from ovseg.vocab import Vocabulary, thing_vocabulary


@dataclass(frozen=True, eq=False)
class PaintedImage(EncodedImage):
    """One image encoded by both pipelines.

    Attributes:
        semantic: the semantic pipeline's encoded image (a ``SemanticImage``).
        instance: the instance pipeline's encoded image (a ``SamClipImage``).
    """

    semantic: Any = None
    instance: Any = None


def paint_instances(
    sem_seg: np.ndarray,
    masks: np.ndarray,
    scores: np.ndarray,
    labels: Sequence[int],
    min_score: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Paint ``(N, H, W)`` bool masks with ``labels`` over an ``(H, W)`` label map.

    Masks scoring under ``min_score`` are skipped; the others are painted in ascending score
    order (ties in the given order), so the best-scored mask is on top.

    Returns:
        ``(labels (H, W) int64, painted score (H, W) float32 (-1 where nothing was painted),
        number of masks painted)``.
    """
    painted = np.array(sem_seg, dtype=np.int64, copy=True)
    painted_score = np.full(painted.shape, -1.0, dtype=np.float32)
    masks = np.asarray(masks, dtype=bool)
    if len(masks) and masks.shape[1:] != painted.shape:
        raise ConfigError(
            f"Instance masks of size {masks.shape[1:]} do not fit the {painted.shape} label map."
        )
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    count = 0
    for index in np.argsort(scores, kind="stable"):
        if scores[index] < min_score:
            continue
        painted[masks[index]] = int(labels[index])
        painted_score[masks[index]] = scores[index]
        count += 1
    return painted, painted_score, count


@PIPELINES.register()
class PaintedSemanticSegmenter(PromptablePipeline, VocabularyDefault):
    """A semantic map with an instance pipeline's named masks painted over it (module docstring).

    Args:
        semantic: a semantic pipeline (image -> ``OVSegResult``, e.g. ``SemanticSegmenter``)
            or its config.
        instance: an instance pipeline on SAM's proposals (image -> ``Instances``, e.g.
            ``InstanceSegmenter`` with ``proposals: sam``) or its config.
        vocabulary: default vocabulary (see :meth:`Vocabulary.create`).
        stuff: display names never painted (default: the instance pipeline's
            ``postprocess.background_classes``).
        min_score: the instance score a mask needs to be painted (per call too); None: every
            mask the instance pipeline returns (its own ``score_threshold`` applies).
    """

    encoded_type = PaintedImage

    def __init__(
        self,
        semantic: Any,
        instance: Any,
        vocabulary: Any = None,
        stuff: Sequence[str] | None = None,
        min_score: float | None = None,
    ) -> None:
        semantic = PIPELINES.build_or_pass(semantic, "semantic pipeline")
        instance = PIPELINES.build_or_pass(instance, "instance pipeline")
        for part, name in ((semantic, "semantic"), (instance, "instance")):
            if not (hasattr(part, "encode_batch") and hasattr(part, "predict")):
                raise ConfigError(f"{name} must be a pipeline (or its config), not {part!r}.")
        self.semantic = semantic
        self.instance = instance
        if stuff is None:
            stuff = getattr(instance, "background_classes", ())
        if isinstance(stuff, str):
            raise ConfigError("stuff must list class names, e.g. [grass, sand, water, wall].")
        self.stuff = tuple(str(name) for name in stuff)
        self.min_score = None if min_score is None else float(min_score)
        self.vocabulary = Vocabulary.create(vocabulary) if vocabulary is not None else None
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    @property
    def backbone(self) -> Any:
        """The semantic pipeline's CLIP backbone."""
        return getattr(self.semantic, "backbone", None)

    @property
    def call_settings(self) -> Mapping[str, Any]:
        return {"min_score": self.min_score}

    def load_image(self, image: Any) -> np.ndarray:
        return decode_like(self.semantic, image)

    def encode(self, image: Any) -> PaintedImage:
        """Decode ``image`` once and encode it for both pipelines."""
        return self.encode_batch([image])[0]

    def encode_batch(self, images: Sequence[Any]) -> list[PaintedImage]:
        arrays = [self.load_image(image) for image in images]
        semantic = self.semantic.encode_batch(arrays)
        instance = self.instance.encode_batch(arrays)
        return [
            PaintedImage(image=array, semantic=sem, instance=inst)
            for array, sem, inst in zip(arrays, semantic, instance, strict=True)
        ]

    def _predict(
        self, encoded: PaintedImage, vocabulary: Any, settings: Mapping[str, Any]
    ) -> OVSegResult:
        """``OVSegResult`` over the whole vocabulary, ``(H, W)`` in input-image pixels."""
        vocab = self.resolve_vocabulary(vocabulary)
        result = self.semantic.predict(encoded.semantic, vocab)
        things, indices = thing_vocabulary(vocab, self.stuff)
        count = 0
        labels, label_scores = result.sem_seg, result.label_scores
        if things is not None:
            instances = self.instance.predict(encoded.instance, things)
            min_score = settings["min_score"]
            labels, painted_score, count = paint_instances(
                result.sem_seg,
                instances.masks,
                instances.scores,
                [indices[label] for label in instances.labels],
                float("-inf") if min_score is None else float(min_score),
            )
            if label_scores is not None:
                label_scores = np.where(painted_score >= 0, painted_score, label_scores)
        return OVSegResult(
            sem_seg=labels,
            class_names=list(result.class_names),
            probs=None,
            meta={**result.meta, "painted_instances": count, "painted_stuff": list(self.stuff)},
            label_scores=label_scores,
        )
