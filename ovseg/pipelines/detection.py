"""Open-vocabulary detection: image + vocabulary -> scored, named boxes.

``DetectionPipeline`` wraps a detector (``ovseg.models.detectors``; ``OWLv2``, ``OWL-ViT``,
``Grounding DINO``): ``encode`` decodes the image (nothing is cached: these detectors fuse image
and text, or re-run their image tower per call), ``predict(encoded, vocabulary)`` returns
:class:`~ovseg.structures.Detections` (boxes XYXY in input-image pixels, best first). The
vocabulary's synonyms are queries of one class; NMS runs per class, across its synonyms.

Settings (``postprocess``, each overridable per call): ``box_threshold`` (None: the detector's
default), ``score_threshold`` (None: one detection per box, its best query; a number: one per
box and query scoring above it), ``nms_threshold`` (box IoU; None: no NMS) and
``max_detections``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ovseg.io import DEFAULT_MAX_PIXELS
from ovseg.pipelines.base import EncodedImage, PromptablePipeline, VocabularyDefault, decode_image
from ovseg.registry import DETECTORS, PIPELINES
from ovseg.settings import merge_settings
from ovseg.structures import Detections
from ovseg.vocab import Vocabulary

__all__ = ["DetectionPipeline"]

POSTPROCESS_DEFAULTS: dict[str, Any] = {
    "box_threshold": None,
    "score_threshold": None,
    "nms_threshold": 0.5,
    "max_detections": 100,
}


@PIPELINES.register()
class DetectionPipeline(PromptablePipeline, VocabularyDefault):
    """Detection with an open-vocabulary detector (see the module docstring).

    Args:
        detector: a detector or its config (``{type: Owlv2Detector, model: ...}``).
        vocabulary: default vocabulary (see :meth:`Vocabulary.create`).
        postprocess: ``box_threshold``, ``score_threshold``, ``nms_threshold``,
            ``max_detections``.
        max_pixels: decoded images with more pixels are refused.
    """

    def __init__(
        self,
        detector: Any,
        vocabulary: Any = None,
        postprocess: Mapping[str, Any] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.detector = DETECTORS.build_or_pass(detector, "detector")
        self.postprocess = merge_settings(POSTPROCESS_DEFAULTS, postprocess, "postprocess")
        self.max_pixels = max_pixels
        self.vocabulary = Vocabulary.create(vocabulary) if vocabulary is not None else None
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    @property
    def call_settings(self) -> Mapping[str, Any]:
        return dict(self.postprocess)

    def encode(self, image: Any) -> EncodedImage:
        """Decode ``image`` (path, bytes, PIL, HWC uint8 array)."""
        return EncodedImage(image=decode_image(image, self.max_pixels))

    def _predict(
        self, encoded: EncodedImage, vocabulary: Any, settings: Mapping[str, Any]
    ) -> Detections:
        vocab = self.resolve_vocabulary(vocabulary)
        found = self.detector.detect(
            encoded.image,
            vocab,
            box_threshold=settings["box_threshold"],
            score_threshold=settings["score_threshold"],
            nms=settings["nms_threshold"],
            max_detections=settings["max_detections"],
        )
        found.meta.update(self.meta)
        return found
