"""Instances from a semantic map: the connected regions of each thing class, optionally redrawn
by SAM from their boxes.

A trained dense head (DenseCLIP) can label every pixel of a scene well while a detector or SAM's
automatic proposals miss an object (two touching objects of one colour, say). This pipeline
turns the semantic pipeline's label map into instances, for one image (HWC uint8 RGB,
input-image pixels):

1. the semantic pipeline labels the image over the query vocabulary followed by the ``stuff``
   classes it lacks (so that stuff pixels are not forced into a thing class);
2. every thing class (neither a stuff class nor the vocabulary's background class) is split
   into its connected regions (8-connected by default; ``connectivity: 4``); regions smaller
   than ``min_area`` pixels are dropped; score = the mean probability of the label over the
   region (the semantic result's ``label_scores``); the ``max_regions`` best-scored go on (their
   masks bound the memory: ``max_regions x H x W`` bytes);
3. with a SAM ``decoder``, each region's box (XYXY, exclusive ``x2, y2``) is one SAM box prompt
   (one mask per box) and SAM's mask replaces the region when the two agree (mask IoU at least
   ``min_agreement``); the score is then multiplied by SAM's predicted IoU;
4. class-wise mask NMS (``nms_threshold``: two regions of one object redrawn by SAM as the same
   mask keep the better-scored one), with ``cross_class_iou`` mask NMS across classes (one
   object named twice keeps its better-scored name), the score threshold and the
   ``max_instances`` best.

:meth:`SemanticInstanceSegmenter.segment_clicks` (with a decoder) names the mask SAM draws
from clicks by the semantic map's most frequent class under it.

The result is an :class:`~ovseg.structures.Instances` over the query vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ovseg.errors import ConfigError
from ovseg.models.classifiers import (
    boxes_from_masks,
    check_cross_class_iou,
    class_wise_nms,
    cross_class_nms,
    matched_mask_iou,
    with_background_classes,
)
from ovseg.models.decoders.prompted import masks_for_boxes
from ovseg.pipelines.base import (
    EncodedImage,
    PromptablePipeline,
    VocabularyDefault,
    decode_like,
    resolve_clicks,
)
from ovseg.registry import MASK_DECODERS, PIPELINES
from ovseg.settings import merge_settings
from ovseg.structures import Instances, PointPrompts
from ovseg.vocab import Vocabulary, thing_vocabulary

POSTPROCESS_DEFAULTS: dict[str, Any] = {
    "min_area": 16,
    "connectivity": 8,
    "min_agreement": 0.5,
    "score_threshold": 0.05,
    "nms_threshold": 0.5,
    "cross_class_iou": None,
    "max_instances": 100,
    "max_regions": 100,
}
CALL_SETTINGS = ("score_threshold", "nms_threshold", "max_instances", "min_area")


@dataclass(frozen=True, eq=False)
class SemanticInstanceImage(EncodedImage):
    """One image encoded for the semantic pipeline and, with a decoder, for SAM.

    Attributes:
        semantic: the semantic pipeline's encoded image.
        embedding: SAM's image embedding, or None without a decoder.
    """

    semantic: Any = None
    embedding: Any = None


def connected_regions(
    sem_seg: np.ndarray,
    label_scores: np.ndarray | None,
    classes: Sequence[int],
    *,
    min_area: int = 1,
    connectivity: int = 8,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected regions of the ``classes`` of an ``(H, W)`` label map.

    Args:
        sem_seg: ``(H, W)`` int class index per pixel.
        label_scores: ``(H, W)`` probability of each pixel's label, or None (scores are 1).
        classes: the class indices split into regions, in this order.
        min_area: smallest region kept, in pixels.
        connectivity: 8 (diagonal neighbours join) or 4.
        limit: at most this many regions, the best-scored (ties: the earlier); None: all.
            Only the kept regions' masks are made, so memory is ``limit x H x W`` bytes at most.

    Returns:
        ``(masks (N, H, W) bool, labels (N,) int64, scores (N,) float32)``: the regions of each
        class in ``classes`` order, within a class in scan order of their first pixel; score =
        the mean of ``label_scores`` over the region.
    """
    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, not {connectivity!r}.")
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    sem_seg = np.asarray(sem_seg)
    height, width = sem_seg.shape

    def label(index: int) -> tuple[np.ndarray, int]:
        return ndimage.label(sem_seg == index, structure=structure)

    found: list[tuple[int, int, float]] = []  # (class, region id, mean score)
    for index in classes:
        regions, count = label(index)
        if not count:
            continue
        areas = np.bincount(regions.ravel(), minlength=count + 1)
        if label_scores is None:
            means = np.ones(count + 1)
        else:
            sums = np.bincount(regions.ravel(), weights=label_scores.ravel(), minlength=count + 1)
            means = sums / np.maximum(areas, 1)
        found += [
            (int(index), region, float(means[region]))
            for region in range(1, count + 1)
            if areas[region] >= max(1, int(min_area))
        ]
    if limit is not None and len(found) > limit:
        best = sorted(range(len(found)), key=lambda i: (-found[i][2], i))[: max(0, int(limit))]
        found = [found[i] for i in sorted(best)]
    masks = np.zeros((len(found), height, width), dtype=bool)
    position = 0
    for index in dict.fromkeys(cls for cls, _, _ in found):  # label each kept class once more
        regions, _ = label(index)
        while position < len(found) and found[position][0] == index:
            masks[position] = regions == found[position][1]
            position += 1
    return (
        masks,
        np.asarray([cls for cls, _, _ in found], dtype=np.int64),
        np.asarray([score for _, _, score in found], dtype=np.float32),
    )


def majority_class(
    sem_seg: np.ndarray, label_scores: np.ndarray | None, mask: np.ndarray, num_classes: int
) -> tuple[int, float]:
    """The most frequent class index below ``num_classes`` of an ``(H, W)`` label map under an
    ``(H, W)`` bool mask (ties: the lower index), and its probability mass over the mask's area
    (``label_scores`` summed over the winner's pixels, 1 per pixel when None, divided by the
    area). ``(0, 0.0)`` when no pixel of the mask has such a class."""
    labels = np.asarray(sem_seg)[mask]
    inside = (labels >= 0) & (labels < num_classes)
    if not inside.any():
        return 0, 0.0
    winner = int(np.argmax(np.bincount(labels[inside], minlength=num_classes)))
    weights = np.ones(labels.shape) if label_scores is None else np.asarray(label_scores)[mask]
    return winner, float(weights[labels == winner].sum() / max(int(mask.sum()), 1))


@PIPELINES.register()
class SemanticInstanceSegmenter(PromptablePipeline, VocabularyDefault):
    """Instances as the connected regions of a semantic map's thing classes (module docstring).

    Args:
        semantic: a semantic pipeline (image -> ``OVSegResult`` with ``label_scores``, e.g.
            ``DenseCLIPSegmenter``) or its config.
        decoder: optional SAM decoder (``SamDecoder`` config) that redraws each region from its
            box; None keeps the regions as they are.
        vocabulary: default vocabulary (see :meth:`Vocabulary.create`).
        stuff: class names that are labelled but never instances (e.g. grass, water); queried
            after the vocabulary when it lacks them.
        postprocess: ``min_area``, ``connectivity``, ``max_regions``, ``min_agreement``,
            ``score_threshold``, ``nms_threshold``, ``cross_class_iou``, ``max_instances``
            (:data:`POSTPROCESS_DEFAULTS`; the :data:`CALL_SETTINGS` per call too).
    """

    encoded_type = SemanticInstanceImage

    def __init__(
        self,
        semantic: Any,
        decoder: Any = None,
        vocabulary: Any = None,
        stuff: Sequence[str] = (),
        postprocess: Mapping[str, Any] | None = None,
    ) -> None:
        semantic = PIPELINES.build_or_pass(semantic, "semantic pipeline")
        if not (hasattr(semantic, "encode_batch") and hasattr(semantic, "predict")):
            raise ConfigError(f"semantic must be a pipeline (or its config), not {semantic!r}.")
        self.semantic = semantic
        self.decoder = (
            None if decoder is None else MASK_DECODERS.build_or_pass(decoder, "mask decoder (SAM)")
        )
        if isinstance(stuff, str):
            raise ConfigError("stuff must list class names, e.g. [grass, sand, water, wall].")
        self.stuff = tuple(str(name) for name in stuff)
        self.postprocess = merge_settings(POSTPROCESS_DEFAULTS, postprocess, "postprocess")
        if int(self.postprocess["connectivity"]) not in (4, 8):
            raise ConfigError("postprocess.connectivity must be 4 or 8.")
        check_cross_class_iou(self.postprocess["cross_class_iou"])
        self.vocabulary = Vocabulary.create(vocabulary) if vocabulary is not None else None
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    @property
    def backbone(self) -> Any:
        """The semantic pipeline's backbone (for tools that name it)."""
        return getattr(self.semantic, "backbone", None)

    @property
    def background_classes(self) -> tuple[str, ...]:
        """The stuff classes (as an instance pipeline's ``background_classes``)."""
        return self.stuff

    @property
    def call_settings(self) -> Mapping[str, Any]:
        return {name: self.postprocess[name] for name in CALL_SETTINGS}

    def load_image(self, image: Any) -> np.ndarray:
        return decode_like(self.semantic, image)

    def encode(self, image: Any) -> SemanticInstanceImage:
        """Decode ``image`` once and encode it for the semantic pipeline (and SAM)."""
        return self.encode_batch([image])[0]

    def encode_batch(self, images: Sequence[Any]) -> list[SemanticInstanceImage]:
        arrays = [self.load_image(image) for image in images]
        semantic = self.semantic.encode_batch(arrays)
        if self.decoder is None:
            embeddings: list[Any] = [None] * len(arrays)
        else:
            embeddings = list(self.decoder.embed_batch(arrays))
        return [
            SemanticInstanceImage(image=array, semantic=sem, embedding=embedding)
            for array, sem, embedding in zip(arrays, semantic, embeddings, strict=True)
        ]

    def redraw(
        self, encoded: SemanticInstanceImage, regions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's masks for the boxes of ``(N, H, W)`` bool regions -> ``(N, H, W)`` bool masks and
        ``(N,)`` predicted IoUs (:func:`~ovseg.models.decoders.prompted.masks_for_boxes`)."""
        boxes = boxes_from_masks(regions).numpy()
        return masks_for_boxes(self.decoder, encoded.embedding, boxes, encoded.size)

    def segment_clicks(
        self, encoded: Any, points: PointPrompts | None = None, vocabulary: Any = None
    ) -> Instances:
        """Click-to-segment: the clicks (1 foreground, 0 background) are one SAM prompt; the mask
        with the highest predicted IoU is named by the semantic map's most frequent vocabulary
        class under it (:func:`majority_class`); score = that class's probability mass over the
        mask x SAM's IoU. One instance, or none when SAM's mask is empty.

        ``segment_clicks(encoded, points, vocabulary)``, or ``segment_clicks(points,
        vocabulary=...)`` on the image given to :meth:`set_image`."""
        if self.decoder is None:
            raise ConfigError(
                "segment_clicks needs a SAM decoder; set the pipeline's decoder (e.g. "
                "{type: SamDecoder, model_type: ovseg-sam-tiny, pretrained: shapes})."
            )
        encoded, points, vocabulary = resolve_clicks(self, encoded, points, vocabulary)
        vocab = self.resolve_vocabulary(vocabulary)
        coords, labels = points.sam_frame()
        prediction = self.decoder.predict(
            point_coords=coords, point_labels=labels, multimask=True, embedding=encoded.embedding
        )
        mask, iou, _ = prediction.best()
        height, width = encoded.size
        if not mask.any():
            return Instances(
                masks=np.zeros((0, height, width), dtype=bool),
                boxes=np.zeros((0, 4)),
                scores=np.zeros(0),
                labels=np.zeros(0),
                class_names=list(vocab.names),
            )
        result = self.semantic.predict(encoded.semantic, with_background_classes(vocab, self.stuff))
        label, mass = majority_class(result.sem_seg, result.label_scores, mask, len(vocab))
        return Instances(
            masks=mask[None],
            boxes=boxes_from_masks(mask[None]).numpy(),
            scores=np.asarray([mass * min(max(iou, 0.0), 1.0)]),
            labels=np.asarray([label]),
            class_names=list(vocab.names),
        )

    def _predict(
        self, encoded: SemanticInstanceImage, vocabulary: Any, settings: Mapping[str, Any]
    ) -> Instances:
        """Instances over the query vocabulary, best first, ``(N, H, W)`` input-image masks."""
        vocab = self.resolve_vocabulary(vocabulary)
        labelled = with_background_classes(vocab, self.stuff)
        result = self.semantic.predict(encoded.semantic, labelled)
        _, things = thing_vocabulary(vocab, self.stuff)
        masks, labels, scores = connected_regions(
            result.sem_seg,
            result.label_scores,
            things,
            min_area=int(settings["min_area"]),
            connectivity=int(self.postprocess["connectivity"]),
            limit=int(self.postprocess["max_regions"]),
        )
        masks_t = torch.from_numpy(masks)
        scores_t = torch.from_numpy(scores).double()
        if self.decoder is not None and len(masks):
            redrawn, ious = self.redraw(encoded, masks_t)
            agree = matched_mask_iou(redrawn, masks_t) >= float(self.postprocess["min_agreement"])
            masks_t = torch.where(agree[:, None, None], redrawn, masks_t)
            scores_t = scores_t * torch.where(agree, ious.double().clamp(0.0, 1.0), 1.0)
        labels_t = torch.from_numpy(labels)
        keep = scores_t >= float(settings["score_threshold"])
        masks_t, scores_t, labels_t = masks_t[keep], scores_t[keep], labels_t[keep]
        order = class_wise_nms(
            scores_t,
            labels_t,
            masks=masks_t,
            iou_threshold=float(settings["nms_threshold"]),
            mode="mask",
        )
        order = cross_class_nms(order, scores_t, masks_t, self.postprocess["cross_class_iou"])
        order_t = torch.from_numpy(order[: int(settings["max_instances"])])
        height, width = encoded.size
        kept = masks_t[order_t]
        return Instances(
            masks=kept.numpy().reshape(-1, height, width),
            boxes=boxes_from_masks(kept).numpy(),
            scores=scores_t[order_t].numpy(),
            labels=labels_t[order_t].numpy(),
            class_names=list(vocab.names),
        )
