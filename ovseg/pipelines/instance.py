"""Open-vocabulary instance segmentation / detection from SAM proposals named by CLIP.

``InstanceSegmenter`` flow for one image (HWC uint8 RGB, input-image pixels):

1. SAM's automatic proposals (``proposals`` settings: segment-anything's generator defaults
   unless set), kept per image so another vocabulary re-uses them;
2. each mask is embedded by the classifier (default: pooling the whole-image dense CLIP tokens
   under it, :class:`~ovseg.models.classifiers.MaskPoolingClassifier`) and, with
   ``crop_weight > 0``, by a masked crop through CLIP's image encoder; cosine with the
   vocabulary's text embeddings x ``logit_scale`` (``crop_logit_scale`` for crops), softmax
   over all queries, geometric ensemble of the two, then per class the max over its synonyms
   (as :class:`~ovseg.pipelines.semantic.SemanticSegmenter` does per pixel);
3. label = the most probable class; masks labelled with the vocabulary's background class
   are dropped (``drop_background``); score = that class probability x SAM's predicted IoU;
4. box = the mask's extent (XYXY, exclusive ``x2, y2``); score threshold; class-wise NMS
   (box IoU, or mask IoU with ``nms_mode: mask``); the ``max_instances`` best, by score.

:meth:`InstanceSegmenter.segment_clicks` names the mask SAM draws from clicks;
:func:`refine_semantic` (and ``SamRefinedSemanticSegmenter``) snaps a semantic map to SAM's
masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

import ovseg.models.classifiers  # noqa: F401  (registers the mask classifiers)
from ovseg.errors import ConfigError, PromptError
from ovseg.io import read_image
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.models.classifiers import (
    MaskContext,
    boxes_from_masks,
    class_probabilities,
    class_wise_nms,
    ensemble_probabilities,
    query_probabilities,
)
from ovseg.pipelines.base import VocabularyDefault
from ovseg.pipelines.referring import (
    SamClipImage,
    best_mask,
    build_component,
    sam_point_frame,
    whole_image_encoder,
)
from ovseg.pipelines.semantic import SemanticSegmenter
from ovseg.registry import BACKBONES, MASK_CLASSIFIERS, MASK_DECODERS, PIPELINES
from ovseg.settings import merge_settings
from ovseg.structures import UNLABELLED, Instances, OVSegResult, PointPrompts
from ovseg.vocab import Vocabulary

__all__ = ["InstanceSegmenter", "SamRefinedSemanticSegmenter", "refine_semantic"]

POSTPROCESS_DEFAULTS = {
    "logit_scale": 40.0,
    "crop_weight": 0.0,
    "crop_logit_scale": 100.0,
    "score_threshold": 0.05,
    "nms_threshold": 0.5,
    "nms_mode": "box",
    "max_instances": 100,
    "min_area": 1,
    "drop_background": True,
    "background_classes": (),
}
REFINE_MODES = ("majority", "mean_prob")


def with_background_classes(vocab: Vocabulary, extra: Sequence[str]) -> Vocabulary:
    """``vocab`` followed by the ``extra`` names as classes of their own (indices >= len(vocab))."""
    if not extra:
        return vocab
    taken = {name.lower() for name in vocab.names}
    extra = [name for name in extra if name.lower() not in taken]
    return Vocabulary(
        vocab.classes + tuple((name,) for name in extra),
        tuple(vocab.names) + tuple(extra) if vocab.display_names else (),
    )


def _masks_of(proposals: Any) -> torch.Tensor:
    """``(M, H, W)`` bool CPU masks of a ``MaskProposals``, a tensor or an array."""
    masks = getattr(proposals, "masks", proposals)
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(masks)
    masks = torch.as_tensor(masks).detach().cpu().bool()
    if masks.ndim != 3:
        raise ConfigError(f"Proposals must be (M, H, W) masks, got shape {tuple(masks.shape)}.")
    return masks


def refine_semantic(result: OVSegResult, proposals: Any, mode: str = "majority") -> OVSegResult:
    """Snap a semantic map to SAM's masks: each mask region takes one label.

    Masks are painted from the largest to the smallest, so a small mask inside a large one
    keeps its own label; pixels under no mask keep the semantic label.

    Args:
        result: the semantic segmentation (``sem_seg`` ``(H, W)``, optional ``probs``).
        proposals: ``MaskProposals`` or ``(M, H, W)`` bool masks in the same pixels.
        mode: ``"majority"``: the most frequent label of ``sem_seg`` inside the mask (the
            semantic map's own thresholds count: ``UNLABELLED`` can win; ties go to the lower
            index); ``"mean_prob"``: the class with the highest mean probability inside the
            mask (needs ``probs``).

    Returns:
        A new :class:`OVSegResult` (``probs`` unchanged; ``meta["sam_refined_masks"]``).
    """
    if mode not in REFINE_MODES:
        raise ConfigError(f"refine mode must be one of {REFINE_MODES}, not {mode!r}.")
    masks = _masks_of(proposals).numpy()
    if masks.shape[1:] != result.sem_seg.shape:
        raise ConfigError(
            f"Masks of size {masks.shape[1:]} do not fit the {result.sem_seg.shape} label map."
        )
    if mode == "mean_prob" and result.probs is None:
        raise ConfigError("mode 'mean_prob' needs the result's probabilities (probs).")
    labels = result.sem_seg.copy()
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    painted = 0
    for index in np.argsort(-areas, kind="stable"):
        mask = masks[index]
        if not mask.any():
            continue
        if mode == "majority":
            counts = np.bincount(result.sem_seg[mask].ravel(), minlength=UNLABELLED + 1)
            label = int(np.argmax(counts))
        else:
            label = int(np.argmax(result.probs[:, mask].mean(axis=1)))
        labels[mask] = label
        painted += 1
    return OVSegResult(
        sem_seg=labels,
        class_names=list(result.class_names),
        probs=result.probs,
        meta={**result.meta, "sam_refined_masks": painted, "sam_refine_mode": mode},
    )


@PIPELINES.register()
class InstanceSegmenter(SamClipImage, VocabularyDefault):
    """SAM proposals named with CLIP (see the module docstring for every step).

    Args:
        backbone: a :class:`ClipBackbone` or its config.
        decoder: a :class:`~ovseg.models.decoders.sam.SamDecoder` or its config.
        classifier: the mask classifier or its config (default ``MaskPoolingClassifier``).
        crop_classifier: the classifier ensembled with ``crop_weight`` (default
            ``MaskedCropClassifier``; built only when ``crop_weight > 0``).
        vocabulary: default vocabulary (see :meth:`Vocabulary.create`).
        inference: dense-encoder settings ``short_side``, ``max_long_side``, ``batch_size``,
            ``max_pixels``.
        proposals: SAM automatic-generator settings (``points_per_side``,
            ``pred_iou_thresh``, ``stability_score_thresh``, ``box_nms_thresh``,
            ``min_mask_region_area`` ...).
        postprocess: ``logit_scale``, ``crop_weight``, ``crop_logit_scale``,
            ``score_threshold``, ``nms_threshold``, ``nms_mode`` (``box``/``mask``),
            ``max_instances``, ``min_area`` (pixels), ``drop_background``,
            ``background_classes`` (names queried with the vocabulary whose masks are dropped,
            e.g. the stuff of a scene, so that a road is not named the closest thing class).
        multimask: for clicks, three SAM masks and the highest predicted IoU kept.
    """

    def __init__(
        self,
        backbone: ClipBackbone | Mapping[str, Any],
        decoder: Any = None,
        classifier: Any = None,
        crop_classifier: Any = None,
        vocabulary: Any = None,
        inference: Mapping[str, Any] | None = None,
        proposals: Mapping[str, Any] | None = None,
        postprocess: Mapping[str, Any] | None = None,
        multimask: bool = True,
    ) -> None:
        if isinstance(backbone, Mapping):
            backbone = BACKBONES.build(backbone)
        if backbone is None:
            raise ConfigError("InstanceSegmenter needs a CLIP backbone to name the masks.")
        self.backbone = backbone
        self.decoder = build_component(decoder, MASK_DECODERS, "mask decoder (SAM)")
        self.classifier = build_component(
            classifier if classifier is not None else {"type": "MaskPoolingClassifier"},
            MASK_CLASSIFIERS,
            "mask classifier",
        )
        self.postprocess = merge_settings(POSTPROCESS_DEFAULTS, postprocess, "postprocess")
        if self.postprocess["nms_mode"] not in ("box", "mask"):
            raise ConfigError(
                f"postprocess.nms_mode must be 'box' or 'mask', not {self.postprocess['nms_mode']!r}."
            )
        crop_weight = float(self.postprocess["crop_weight"])
        if not 0.0 <= crop_weight <= 1.0:
            raise ConfigError(f"postprocess.crop_weight must lie in [0, 1], got {crop_weight}.")
        self.crop_classifier = (
            build_component(
                crop_classifier
                if crop_classifier is not None
                else {"type": "MaskedCropClassifier"},
                MASK_CLASSIFIERS,
                "crop classifier",
            )
            if crop_weight > 0
            else None
        )
        self.background_classes = tuple(str(n) for n in self.postprocess["background_classes"])
        self.encoder, self.inference = whole_image_encoder(backbone, inference)
        self.proposal_settings = dict(proposals or {})
        self.multimask = bool(multimask)
        self.vocabulary = Vocabulary.create(vocabulary) if vocabulary is not None else None
        self._image: np.ndarray | None = None
        self._tokens: torch.Tensor | None = None
        self._proposals: Any = None
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    # ----------------------------------------------------------------- image side
    def _forget_image_results(self) -> None:
        self._proposals = None

    def proposals(self) -> Any:
        """SAM's automatic ``MaskProposals`` for the set image (cached)."""
        self._require_image()
        if self._proposals is None:
            self._proposals = self.decoder.generate(**self.proposal_settings)
        return self._proposals

    # ----------------------------------------------------------------- naming masks
    def classify(self, masks: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
        """Class probabilities ``(M, C)`` of ``(M, H, W)`` masks of the set image."""
        context = MaskContext(
            image=self._require_image(), tokens=self.dense_tokens(), backbone=self.backbone
        )
        text = self.backbone.encode_text(vocab.queries).float().cpu()
        probs = query_probabilities(
            self.classifier.embed(masks, context).cpu(), text, self.postprocess["logit_scale"]
        )
        if self.crop_classifier is not None:
            cropped = query_probabilities(
                self.crop_classifier.embed(masks, context).cpu(),
                text,
                self.postprocess["crop_logit_scale"],
            )
            probs = ensemble_probabilities(probs, cropped, float(self.postprocess["crop_weight"]))
        return class_probabilities(probs, vocab)

    def name_masks(
        self, masks: torch.Tensor, iou_scores: torch.Tensor, vocab: Vocabulary
    ) -> Instances:
        """Label, score, box, threshold, NMS and cut for ``(M, H, W)`` masks with SAM's IoUs."""
        height, width = self._require_image().shape[:2]
        masks = _masks_of(masks)
        iou_scores = torch.as_tensor(iou_scores).detach().float().cpu().reshape(-1)
        areas = masks.flatten(1).sum(dim=1)
        keep = areas >= max(1, int(self.postprocess["min_area"]))
        masks, iou_scores = masks[keep], iou_scores[keep]
        if len(masks):
            probs = self.classify(masks, with_background_classes(vocab, self.background_classes))
            class_prob, labels = probs.max(dim=1)
            scores = class_prob * iou_scores.clamp(0.0, 1.0)
            keep = (scores >= float(self.postprocess["score_threshold"])) & (labels < len(vocab))
            background = vocab.background_index
            if self.postprocess["drop_background"] and background is not None:
                keep &= labels != background
            masks, scores, labels = masks[keep], scores[keep], labels[keep]
        if not len(masks):
            return Instances(
                masks=np.zeros((0, height, width), dtype=bool),
                boxes=np.zeros((0, 4), dtype=np.float32),
                scores=np.zeros(0, dtype=np.float32),
                labels=np.zeros(0, dtype=np.int64),
                class_names=vocab.names,
            )
        boxes = boxes_from_masks(masks)
        order = class_wise_nms(
            scores,
            labels,
            boxes=boxes,
            masks=masks if self.postprocess["nms_mode"] == "mask" else None,
            iou_threshold=float(self.postprocess["nms_threshold"]),
            mode=self.postprocess["nms_mode"],
        )[: int(self.postprocess["max_instances"])]
        order_t = torch.from_numpy(order)
        return Instances(
            masks=masks[order_t].numpy(),
            boxes=boxes[order_t].numpy(),
            scores=scores[order_t].numpy(),
            labels=labels[order_t].numpy(),
            class_names=vocab.names,
        )

    # ----------------------------------------------------------------- entry points
    def predict(self, vocabulary: Any = None) -> Instances:
        """Named instances of the image given to :meth:`set_image`, best first."""
        vocab = self._resolve_vocabulary(vocabulary)
        proposals = self.proposals()
        return self.name_masks(proposals.masks, proposals.iou_scores, vocab)

    def __call__(self, image: Any, vocabulary: Any = None) -> Instances:
        vocab = self._resolve_vocabulary(vocabulary)
        self.set_image(image)
        return self.predict(vocab)

    def segment_clicks(self, points: PointPrompts, vocabulary: Any = None) -> Instances:
        """Click-to-segment: the clicks (1 foreground, 0 background) are one SAM prompt; the
        mask with the highest predicted IoU is named like a proposal (no score threshold or
        NMS). Returns one instance, or none when SAM's mask is empty."""
        vocab = self._resolve_vocabulary(vocabulary)
        self._require_image()
        if len(points) == 0:
            raise PromptError("Give at least one click (PointPrompts with one point or more).")
        coords, labels = sam_point_frame(points)
        prediction = self.decoder.predict(
            point_coords=coords, point_labels=labels, multimask=self.multimask
        )
        mask, iou, _ = best_mask(prediction)
        masks = torch.from_numpy(mask)[None]
        height, width = mask.shape
        if not mask.any():
            return self.name_masks(masks[:0], torch.zeros(0), vocab)
        probs = self.classify(masks, vocab)
        class_prob, label = probs.max(dim=1)
        return Instances(
            masks=mask[None],
            boxes=boxes_from_masks(masks).numpy(),
            scores=(class_prob * min(max(iou, 0.0), 1.0)).numpy(),
            labels=label.numpy(),
            class_names=vocab.names,
        )

    def refine_semantic(
        self, result: OVSegResult, proposals: Any = None, mode: str = "majority"
    ) -> OVSegResult:
        """:func:`refine_semantic` with the set image's proposals by default."""
        return refine_semantic(
            result, proposals if proposals is not None else self.proposals(), mode
        )


@PIPELINES.register()
class SamRefinedSemanticSegmenter:
    """Semantic segmentation whose regions are snapped to SAM's automatic masks.

    Args:
        semantic: a :class:`SemanticSegmenter` or its config.
        decoder: a :class:`~ovseg.models.decoders.sam.SamDecoder` or its config.
        proposals: SAM automatic-generator settings.
        mode: ``majority`` or ``mean_prob`` (see :func:`refine_semantic`).
        vocabulary: default vocabulary (passed to the semantic segmenter).
    """

    def __init__(
        self,
        semantic: SemanticSegmenter | Mapping[str, Any],
        decoder: Any = None,
        proposals: Mapping[str, Any] | None = None,
        mode: str = "majority",
        vocabulary: Any = None,
    ) -> None:
        if isinstance(semantic, Mapping):
            semantic = PIPELINES.build(semantic)
        if mode not in REFINE_MODES:
            raise ConfigError(f"mode must be one of {REFINE_MODES}, not {mode!r}.")
        self.semantic = semantic
        self.decoder = build_component(decoder, MASK_DECODERS, "mask decoder (SAM)")
        self.proposal_settings = dict(proposals or {})
        self.mode = mode
        if vocabulary is not None:
            self.semantic.set_vocabulary(vocabulary)
        self._proposals: Any = None
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    @property
    def backbone(self) -> ClipBackbone:
        return self.semantic.backbone

    def set_image(self, image: Any) -> np.ndarray:
        array = read_image(image, max_pixels=self.semantic.inference["max_pixels"])
        self.semantic.set_image(array)
        self.decoder.set_image(array)
        self._proposals = None
        return array

    def predict(self, vocabulary: Any = None) -> OVSegResult:
        result = self.semantic.predict(vocabulary)
        if self._proposals is None:
            self._proposals = self.decoder.generate(**self.proposal_settings)
        refined = refine_semantic(result, self._proposals, self.mode)
        refined.meta.update(self.meta)
        return refined

    def __call__(self, image: Any, vocabulary: Any = None) -> OVSegResult:
        self.set_image(image)
        return self.predict(vocabulary)
