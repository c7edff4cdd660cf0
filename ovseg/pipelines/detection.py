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

Naming by CLIP crops (``postprocess.naming: clip``, with a ``backbone``): the detector only
finds boxes (each with its best query's score s, above ``box_threshold``); each box's square
crop (``crop_classifier``, default :class:`~ovseg.models.classifiers.MaskedCropClassifier`)
goes through CLIP's image tower and is compared with the vocabulary's text embeddings
(``softmax(crop_logit_scale x cosine)`` over the queries and the ``background_classes``), and a
box-query pair scores ``p_clip x s ** detector_score_power``, the geometric ensemble of a
detector's and CLIP's region scores as in ViLD. It helps where the detector's class head
generalises worse than CLIP's image tower, e.g. a detector trained on few classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ovseg.errors import ConfigError
from ovseg.io import DEFAULT_MAX_PIXELS
from ovseg.models.classifiers import (
    build_crop_classifier,
    embed_box_crops,
    query_probabilities,
    with_background_classes,
)
from ovseg.models.detectors.base import ranked_detections
from ovseg.pipelines.base import EncodedImage, PromptablePipeline, VocabularyDefault, decode_image
from ovseg.registry import BACKBONES, DETECTORS, PIPELINES
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
NAMING_DEFAULTS: dict[str, Any] = {
    "naming": "detector",
    "crop_logit_scale": 100.0,
    "detector_score_power": 1.0,
    "background_classes": (),
}
NAMINGS = ("detector", "clip")


@PIPELINES.register()
class DetectionPipeline(PromptablePipeline, VocabularyDefault):
    """Detection with an open-vocabulary detector (see the module docstring).

    Args:
        detector: a detector or its config (``{type: Owlv2Detector, model: ...}``).
        vocabulary: default vocabulary (see :meth:`Vocabulary.create`).
        postprocess: ``box_threshold``, ``score_threshold``, ``nms_threshold``,
            ``max_detections``; ``naming`` (``detector`` or ``clip``), and with ``clip``
            ``crop_logit_scale``, ``detector_score_power``, ``background_classes`` (names
            queried with the vocabulary; a box whose best class is one of them is dropped).
        max_pixels: decoded images with more pixels are refused.
        backbone: with ``naming: clip``, the CLIP (:class:`ClipBackbone` or its config).
        crop_classifier: with ``naming: clip``, the crop embedder (default
            ``MaskedCropClassifier``).
    """

    def __init__(
        self,
        detector: Any,
        vocabulary: Any = None,
        postprocess: Mapping[str, Any] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        backbone: Any = None,
        crop_classifier: Any = None,
    ) -> None:
        self.detector = DETECTORS.build_or_pass(detector, "detector")
        self.postprocess = merge_settings(
            {**POSTPROCESS_DEFAULTS, **NAMING_DEFAULTS}, postprocess, "postprocess"
        )
        naming = self.postprocess["naming"]
        if naming not in NAMINGS:
            raise ConfigError(f"postprocess.naming must be one of {NAMINGS}, not {naming!r}.")
        if naming == "clip" and backbone is None:
            raise ConfigError(
                "postprocess.naming: clip names the detector's boxes with CLIP crops: give a "
                "backbone (e.g. backbone: ${pipeline.backbone})."
            )
        self.backbone = BACKBONES.build_or_pass(backbone, "backbone") if naming == "clip" else None
        self.crop_classifier = build_crop_classifier(crop_classifier) if naming == "clip" else None
        self.background_classes = tuple(str(n) for n in self.postprocess["background_classes"])
        self.max_pixels = max_pixels
        self.vocabulary = Vocabulary.create(vocabulary) if vocabulary is not None else None
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    @property
    def call_settings(self) -> Mapping[str, Any]:
        return {key: self.postprocess[key] for key in POSTPROCESS_DEFAULTS}

    def encode(self, image: Any) -> EncodedImage:
        """Decode ``image`` (path, bytes, PIL, HWC uint8 array)."""
        return EncodedImage(image=decode_image(image, self.max_pixels))

    def _predict(
        self, encoded: EncodedImage, vocabulary: Any, settings: Mapping[str, Any]
    ) -> Detections:
        vocab = self.resolve_vocabulary(vocabulary)
        if self.postprocess["naming"] == "clip":
            found = self.name_boxes(encoded.image, vocab, settings)
            found.meta.update(self.meta)
            return found
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

    def name_boxes(
        self, image: np.ndarray, vocab: Vocabulary, settings: Mapping[str, Any]
    ) -> Detections:
        """The detector's boxes named by CLIP crops (``naming: clip``; module docstring)."""
        found = self.detector.detect(image, vocab, box_threshold=settings["box_threshold"])
        height, width = image.shape[:2]
        queried = with_background_classes(vocab, self.background_classes)
        embeds = embed_box_crops(self.crop_classifier, image, found.boxes, self.backbone)
        text = self.backbone.encode_text(queried.queries).float().cpu()
        probs = query_probabilities(embeds, text, float(self.postprocess["crop_logit_scale"]))
        quality = torch.from_numpy(found.scores).double() ** float(
            self.postprocess["detector_score_power"]
        )
        scores = probs.double() * quality[:, None]  # (N boxes, Q queries)
        query_class = torch.as_tensor(queried.query_to_class, dtype=torch.long)
        own = query_class < len(vocab)
        if settings["score_threshold"] is None:
            rows = torch.arange(len(scores))
            columns = scores.argmax(dim=1) if len(scores) else torch.zeros(0, dtype=torch.long)
            keep = own[columns]
            rows, columns = rows[keep], columns[keep]
        else:
            rows, columns = torch.nonzero(
                (scores > float(settings["score_threshold"])) & own[None], as_tuple=True
            )
        boxes = torch.from_numpy(found.boxes)[rows]
        chosen = scores[rows, columns].float()
        labels = query_class[columns]
        return ranked_detections(
            boxes,
            chosen,
            columns,
            labels,
            vocab.queries,
            vocab.names,
            (height, width),
            nms=None if settings["nms_threshold"] is None else float(settings["nms_threshold"]),
            limit=settings["max_detections"],
        )
