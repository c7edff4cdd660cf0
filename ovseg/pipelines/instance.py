"""Open-vocabulary instance segmentation: SAM proposals named by CLIP, or detector boxes
segmented by SAM.

``InstanceSegmenter`` takes its proposals from one of two sources (``proposals``):

* ``sam`` (the default; a mapping of SAM automatic-generator settings also selects it): SAM's
  automatic masks, named by CLIP (steps 1-4 below);
* ``detector``: an open-vocabulary detector (``detector: {type: Owlv2Detector, ...}``) finds and
  names boxes of the vocabulary; each box (XYXY input-image pixels, given to SAM as it is) is one
  SAM box prompt (one mask per box); score = detector score x SAM's predicted IoU; box = the
  detector's box (``box_from: mask``: the mask's extent); then the score threshold, class-wise
  NMS and ``max_instances`` as below. No CLIP backbone is needed. ``box_threshold`` (per call
  too) is the detector's; with ``query_threshold`` (None: each box is labelled with its best
  query) a box gives one mask per query scoring above it (the detector's ``score_threshold``).
  With ``naming: clip`` (and a backbone) the detector only finds the boxes: each box's mask is
  named by steps 2-4 below, with SAM's IoU x detector score ** ``detector_score_power`` as
  the mask's quality (a geometric ensemble of the detector's and CLIP's scores, as ViLD's).

SAM-proposal flow for one image (HWC uint8 RGB, input-image pixels):

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
4. with ``merge_overlap``, same-label masks that are parts of one object are joined into
   their union (:func:`~ovseg.models.classifiers.merge_parts`: a small SAM often proposes a
   ring as several arcs); box = the mask's extent (XYXY, exclusive ``x2, y2``); score threshold; class-wise NMS
   (box IoU, or mask IoU with ``nms_mode: mask``); with ``cross_class_iou``, mask NMS across
   classes (one object named twice keeps its better-scored name); the ``max_instances`` best,
   by score.

:meth:`InstanceSegmenter.segment_clicks` names the mask SAM draws from clicks;
:func:`refine_semantic` snaps a semantic map to SAM's masks.

:meth:`InstanceSegmenter.encode` embeds the image for SAM; the proposals and the CLIP tokens
are computed on first use and kept with the encoded image, so another vocabulary costs only
the naming.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

import ovseg.models.classifiers  # noqa: F401  (registers the mask classifiers)
from ovseg.errors import ConfigError
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.models.classifiers import (
    MaskContext,
    boxes_from_masks,
    build_crop_classifier,
    check_cross_class_iou,
    class_probabilities,
    class_wise_nms,
    cross_class_nms,
    ensemble_probabilities,
    merge_parts,
    query_probabilities,
    with_background_classes,
)
from ovseg.models.decoders.prompted import masks_for_boxes
from ovseg.pipelines.base import (
    DENSE_TOKEN_DEFAULTS,
    SamClipImage,
    SamClipPipeline,
    VocabularyDefault,
    resolve_clicks,
)
from ovseg.registry import BACKBONES, DETECTORS, MASK_CLASSIFIERS, MASK_DECODERS, PIPELINES
from ovseg.settings import merge_settings
from ovseg.structures import UNLABELLED, Instances, OVSegResult, PointPrompts
from ovseg.vocab import Vocabulary

__all__ = ["InstanceSegmenter", "refine_semantic"]

POSTPROCESS_DEFAULTS = {
    "logit_scale": 40.0,
    "crop_weight": 0.0,
    "crop_logit_scale": 100.0,
    "score_threshold": 0.05,
    "nms_threshold": 0.5,
    "nms_mode": "box",
    "merge_overlap": None,
    "cross_class_iou": None,
    "max_instances": 100,
    "min_area": 1,
    "drop_background": True,
    "background_classes": (),
}
CALL_SETTINGS = ("score_threshold", "nms_threshold", "max_instances", "min_area")
REFINE_MODES = ("majority", "mean_prob")
PROPOSAL_SOURCES = ("sam", "detector")
DETECTOR_POSTPROCESS_DEFAULTS = {
    "box_threshold": None,
    "query_threshold": None,
    "box_from": "detector",
    "naming": "detector",
    "detector_score_power": 1.0,
}
BOX_SOURCES = ("detector", "mask")
NAMING_SOURCES = ("detector", "clip")


def proposal_source(proposals: Any) -> tuple[str, dict[str, Any]]:
    """``(source, SAM generator settings)`` of an ``InstanceSegmenter``'s ``proposals``."""
    if proposals is None:
        return "sam", {}
    if isinstance(proposals, str):
        if proposals not in PROPOSAL_SOURCES:
            raise ConfigError(
                f"proposals must be one of {PROPOSAL_SOURCES} or a mapping of SAM generator "
                f"settings, not {proposals!r}."
            )
        return proposals, {}
    if isinstance(proposals, Mapping):
        return "sam", dict(proposals)
    raise ConfigError(f"proposals must be 'sam', 'detector' or a mapping, not {proposals!r}.")


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
class InstanceSegmenter(SamClipPipeline, VocabularyDefault):
    """SAM proposals named with CLIP (see the module docstring for every step).

    Args:
        backbone: a :class:`ClipBackbone` or its config.
        decoder: a SAM-family decoder (``SamDecoder``, ``Sam2Decoder``, ``HqSamDecoder``) or its
            config.
        classifier: the mask classifier or its config (default ``MaskPoolingClassifier``).
        crop_classifier: the classifier ensembled with ``crop_weight`` (default
            ``MaskedCropClassifier``; built only when ``crop_weight > 0``).
        vocabulary: default vocabulary (see :meth:`Vocabulary.create`).
        inference: dense-encoder settings ``short_side``, ``max_long_side``, ``batch_size``,
            ``max_pixels``.
        proposals: ``"sam"`` (default), ``"detector"``, or SAM automatic-generator settings
            (``points_per_side``, ``pred_iou_thresh``, ``stability_score_thresh``,
            ``box_nms_thresh``, ``min_mask_region_area`` ...).
        detector: with ``proposals: detector``, the detector or its config
            (``{type: Owlv2Detector, model: google/owlv2-base-patch16-ensemble}``).
        postprocess: ``logit_scale``, ``crop_weight``, ``crop_logit_scale``,
            ``score_threshold``, ``nms_threshold``, ``nms_mode`` (``box``/``mask``),
            ``merge_overlap`` (None: off; else same-label masks whose intersection is at least
            this share of the smaller one are joined before NMS), ``cross_class_iou`` (None:
            off; else after the class-wise NMS a mask whose mask IoU with a better-scored mask
            of any class exceeds it is dropped: one object named twice keeps its best name),
            ``max_instances``, ``min_area`` (pixels), ``drop_background``,
            ``background_classes`` (names queried with the vocabulary whose masks are dropped,
            e.g. the stuff of a scene, so that a road is not named the closest thing class).
            ``box_threshold`` (detector proposals: the detector's, None: its default),
            ``query_threshold`` (detector proposals: None labels a box with its best query, a
            number with every query scoring above it, one mask each), ``box_from``
            (detector proposals: ``detector`` or ``mask``), ``naming`` (detector proposals:
            ``detector`` or ``clip``) and ``detector_score_power`` (with ``naming: clip``).
            ``score_threshold``, ``nms_threshold``, ``max_instances`` and ``min_area`` (and
            ``box_threshold``, ``query_threshold`` with detector proposals) can be overridden
            per call
            (``predict(encoded, vocabulary, score_threshold=0.0)``).
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
        detector: Any = None,
    ) -> None:
        self.proposal_source, sam_settings = proposal_source(proposals)
        if isinstance(backbone, Mapping):
            backbone = BACKBONES.build(backbone)
        if backbone is None and self.proposal_source == "sam":
            raise ConfigError(
                "InstanceSegmenter needs a CLIP backbone to name SAM's masks (or proposals: "
                "detector with a detector: {type: ...} section)."
            )
        self.backbone = backbone
        self.detector = None
        if self.proposal_source == "detector":
            self.detector = DETECTORS.build_or_pass(detector, "detector (proposals: detector)")
        elif detector is not None:
            raise ConfigError(
                "A detector is used only with proposals: detector; set it or drop it."
            )
        self.decoder = MASK_DECODERS.build_or_pass(decoder, "mask decoder (SAM)")
        self.classifier = MASK_CLASSIFIERS.build_or_pass(
            classifier if classifier is not None else {"type": "MaskPoolingClassifier"},
            "mask classifier",
        )
        defaults = dict(POSTPROCESS_DEFAULTS)
        if self.proposal_source == "detector":
            defaults.update(DETECTOR_POSTPROCESS_DEFAULTS)
        self.postprocess = merge_settings(defaults, postprocess, "postprocess")
        if self.postprocess.get("box_from", "detector") not in BOX_SOURCES:
            raise ConfigError(
                f"postprocess.box_from must be one of {BOX_SOURCES}, "
                f"not {self.postprocess['box_from']!r}."
            )
        naming = self.postprocess.get("naming", "detector")
        if naming not in NAMING_SOURCES:
            raise ConfigError(
                f"postprocess.naming must be one of {NAMING_SOURCES}, not {naming!r}."
            )
        if naming == "clip" and backbone is None:
            raise ConfigError(
                "postprocess.naming: clip names the detector's masks with CLIP: give a "
                "backbone (e.g. backbone: ${pipeline.backbone})."
            )
        if self.postprocess["nms_mode"] not in ("box", "mask"):
            raise ConfigError(
                f"postprocess.nms_mode must be 'box' or 'mask', not {self.postprocess['nms_mode']!r}."
            )
        check_cross_class_iou(self.postprocess["cross_class_iou"])
        crop_weight = float(self.postprocess["crop_weight"])
        if not 0.0 <= crop_weight <= 1.0:
            raise ConfigError(f"postprocess.crop_weight must lie in [0, 1], got {crop_weight}.")
        if backbone is None:
            crop_weight = 0.0
        self.crop_classifier = build_crop_classifier(crop_classifier) if crop_weight > 0 else None
        self.background_classes = tuple(str(n) for n in self.postprocess["background_classes"])
        self.inference = merge_settings(DENSE_TOKEN_DEFAULTS, inference, "inference")
        self.proposal_settings = sam_settings
        self.multimask = bool(multimask)
        self.vocabulary = Vocabulary.create(vocabulary) if vocabulary is not None else None
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    @property
    def call_settings(self) -> Mapping[str, Any]:
        keys = CALL_SETTINGS + (
            ("box_threshold", "query_threshold") if self.detector is not None else ()
        )
        return {key: self.postprocess[key] for key in keys}

    # ----------------------------------------------------------------- image side
    def proposals(self, encoded: SamClipImage) -> Any:
        """SAM's automatic ``MaskProposals`` for ``encoded`` (computed once per image).

        Raises:
            ConfigError: this pipeline segments a detector's boxes (``proposals: detector``).
        """
        if self.proposal_source == "detector":
            raise ConfigError(
                "This instance pipeline segments a detector's boxes (proposals: detector) and has "
                "no class-agnostic SAM proposals; use one with proposals: sam (shapes-tiny: "
                "pipelines.instance_sam)."
            )
        return encoded.cached(
            f"proposals:{id(self.decoder)}",
            lambda: self.decoder.generate(
                encoded.image, embedding=encoded.embedding, **self.proposal_settings
            ),
        )

    # ----------------------------------------------------------------- naming masks
    def classify(
        self, encoded: SamClipImage, masks: torch.Tensor, vocab: Vocabulary
    ) -> torch.Tensor:
        """Class probabilities ``(M, C)`` of ``(M, H, W)`` masks of ``encoded``."""
        context = MaskContext(
            image=encoded.image, tokens=self.dense_tokens(encoded), backbone=self.backbone
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
        self,
        encoded: SamClipImage,
        masks: torch.Tensor,
        iou_scores: torch.Tensor,
        vocab: Vocabulary,
        settings: Mapping[str, Any] | None = None,
    ) -> Instances:
        """Label, score, box, threshold, NMS and cut for ``(M, H, W)`` masks with SAM's IoUs
        (``settings``: the call's :attr:`call_settings`, default the pipeline's)."""
        settings = self.settings_for(settings or {})
        height, width = encoded.size
        masks = _masks_of(masks)
        iou_scores = torch.as_tensor(iou_scores).detach().float().cpu().reshape(-1)
        areas = masks.flatten(1).sum(dim=1)
        keep = areas >= max(1, int(settings["min_area"]))
        masks, iou_scores = masks[keep], iou_scores[keep]
        if len(masks):
            probs = self.classify(
                encoded, masks, with_background_classes(vocab, self.background_classes)
            )
            class_prob, labels = probs.max(dim=1)
            scores = class_prob * iou_scores.clamp(0.0, 1.0)
            keep = (scores >= float(settings["score_threshold"])) & (labels < len(vocab))
            background = vocab.background_index
            if self.postprocess["drop_background"] and background is not None:
                keep &= labels != background
            masks, scores, labels = masks[keep], scores[keep], labels[keep]
            if len(masks) and self.postprocess["merge_overlap"] is not None:
                masks, scores, labels = merge_parts(
                    masks, scores, labels, float(self.postprocess["merge_overlap"])
                )
        if not len(masks):
            return Instances(
                masks=np.zeros((0, height, width), dtype=bool),
                boxes=np.zeros((0, 4), dtype=np.float32),
                scores=np.zeros(0, dtype=np.float32),
                labels=np.zeros(0, dtype=np.int64),
                class_names=vocab.names,
            )
        boxes = boxes_from_masks(masks)
        order_t = torch.from_numpy(self._kept_order(scores, labels, boxes, masks, settings))
        return Instances(
            masks=masks[order_t].numpy(),
            boxes=boxes[order_t].numpy(),
            scores=scores[order_t].numpy(),
            labels=labels[order_t].numpy(),
            class_names=vocab.names,
        )

    def _kept_order(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        boxes: torch.Tensor,
        masks: torch.Tensor,
        settings: Mapping[str, Any],
    ) -> np.ndarray:
        """Indices kept by class-wise NMS, then (``cross_class_iou``) by mask NMS across
        classes, best score first, at most ``max_instances``; ``masks`` ``(N, H, W)``."""
        order = class_wise_nms(
            scores,
            labels,
            boxes=boxes,
            masks=masks if self.postprocess["nms_mode"] == "mask" else None,
            iou_threshold=float(settings["nms_threshold"]),
            mode=self.postprocess["nms_mode"],
        )
        order = cross_class_nms(order, scores, masks, self.postprocess["cross_class_iou"])
        return order[: int(settings["max_instances"])]

    # ----------------------------------------------------------------- entry points
    def _predict(
        self, encoded: SamClipImage, vocabulary: Any, settings: Mapping[str, Any]
    ) -> Instances:
        """Named instances of ``encoded``, best first."""
        vocab = self.resolve_vocabulary(vocabulary)
        if self.detector is not None:
            return self.segment_detections(encoded, vocab, settings)
        proposals = self.proposals(encoded)
        return self.name_masks(encoded, proposals.masks, proposals.iou_scores, vocab, settings)

    def segment_detections(
        self, encoded: SamClipImage, vocab: Vocabulary, settings: Mapping[str, Any]
    ) -> Instances:
        """Detector boxes -> SAM box prompts -> named masks (``proposals: detector``)."""
        height, width = encoded.size
        found = self.detector.detect(
            encoded.image,
            vocab,
            box_threshold=settings.get("box_threshold"),
            score_threshold=settings.get("query_threshold"),
        )
        masks, ious = self.segment_boxes(encoded, found.boxes)
        by_clip = self.postprocess["naming"] == "clip"
        power = float(self.postprocess["detector_score_power"]) if by_clip else 1.0
        scores = torch.from_numpy(found.scores).pow(power) * ious.clamp(0.0, 1.0)
        if by_clip:  # the scores are the masks' quality; CLIP's class probability joins them
            return self.name_masks(encoded, masks, scores, vocab, settings)
        labels = torch.from_numpy(found.labels)
        boxes = torch.from_numpy(found.boxes)
        if self.postprocess["box_from"] == "mask":
            boxes = torch.where(
                masks.flatten(1).any(dim=1, keepdim=True), boxes_from_masks(masks), boxes
            )
        keep = (scores >= float(settings["score_threshold"])) & (
            masks.flatten(1).sum(dim=1) >= max(1, int(settings["min_area"]))
        )
        background = vocab.background_index
        if self.postprocess["drop_background"] and background is not None:
            keep &= labels != background
        masks, scores, labels, boxes = masks[keep], scores[keep], labels[keep], boxes[keep]
        order = torch.from_numpy(self._kept_order(scores, labels, boxes, masks, settings))
        return Instances(
            masks=masks[order].numpy().reshape(-1, height, width),
            boxes=boxes[order].numpy(),
            scores=scores[order].numpy(),
            labels=labels[order].numpy(),
            class_names=vocab.names,
        )

    def segment_boxes(
        self, encoded: SamClipImage, boxes: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 4)`` XYXY input-pixel boxes -> ``(N, H, W)`` bool masks and ``(N,)`` SAM IoUs
        (:func:`~ovseg.models.decoders.prompted.masks_for_boxes`)."""
        return masks_for_boxes(self.decoder, encoded.embedding, boxes, encoded.size)

    def segment_clicks(
        self, encoded: Any, points: PointPrompts | None = None, vocabulary: Any = None
    ) -> Instances:
        """Click-to-segment: the clicks (1 foreground, 0 background) are one SAM prompt; the
        mask with the highest predicted IoU is named like a proposal (no score threshold or
        NMS). Returns one instance, or none when SAM's mask is empty.

        ``segment_clicks(encoded, points, vocabulary)``, or ``segment_clicks(points,
        vocabulary=...)`` on the image given to :meth:`set_image`."""
        encoded, points, vocabulary = resolve_clicks(self, encoded, points, vocabulary)
        vocab = self.resolve_vocabulary(vocabulary)
        coords, labels = points.sam_frame()
        prediction = self.decoder.predict(
            point_coords=coords,
            point_labels=labels,
            multimask=self.multimask,
            embedding=encoded.embedding,
        )
        mask, iou, _ = prediction.best()
        masks = torch.from_numpy(mask)[None]
        if not mask.any():
            return self.name_masks(encoded, masks[:0], torch.zeros(0), vocab)
        probs = self.classify(encoded, masks, vocab)
        class_prob, label = probs.max(dim=1)
        return Instances(
            masks=mask[None],
            boxes=boxes_from_masks(masks).numpy(),
            scores=(class_prob * min(max(iou, 0.0), 1.0)).numpy(),
            labels=label.numpy(),
            class_names=vocab.names,
        )

    def refine_semantic(
        self, encoded: SamClipImage, result: OVSegResult, mode: str = "majority"
    ) -> OVSegResult:
        """:func:`refine_semantic` of ``result`` with the proposals of ``encoded``."""
        return refine_semantic(result, self.proposals(encoded), mode)
