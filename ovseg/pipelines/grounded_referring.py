"""``GroundedReferringSegmenter``: referring segmentation by detection, CLIP re-ranking and SAM.

Flow for one image (HWC uint8 RGB, input-image pixels) and one phrase:

1. an open-vocabulary detector (``detector``; e.g. OWL-ViT / OWLv2 / the embedded
   ``ClipOwlDetector``) scores its candidate boxes for the phrase alone; the ``candidates`` best
   above ``box_threshold`` are kept (XYXY input-image pixels, detector score ``s`` each);
2. each box's square crop (``crop_classifier``, default
   :class:`~ovseg.models.classifiers.MaskedCropClassifier`) goes through CLIP's image tower and
   is compared with the phrase's text embedding: cosine ``c`` (as ReCLIP ranks region
   proposals with CLIP for referring expressions);
3. the box with the highest ``crop_logit_scale * c + detector_score_power * log(s)`` is the
   referent: a geometric ensemble ``exp(scale * c) * s ** power`` of CLIP's and the detector's
   evidence (``detector_score_power: 0`` ranks by CLIP alone, a large ``crop_logit_scale``
   likewise; ``crop_logit_scale: 0`` by the detector alone);
4. SAM decodes that box; with ``multimask`` it proposes three masks and the one with the highest
   predicted IoU is kept. The result's score is that predicted IoU.

The result is a :class:`~ovseg.structures.ReferringResult` like ``ReferringSegmenter``'s: no
point prompts, and as ``similarity`` each candidate box painted with its ranking weight
(softmax of the ranking scores over the candidates; the maximum where boxes overlap), so the
heat map shows where the phrase was looked for. ``meta`` names the chosen box, its detector
score and cosine, and the number of candidates. When the detector finds no box above
``box_threshold`` the mask is empty (score 0), not an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ovseg.errors import PromptError
from ovseg.models.classifiers import box_masks, build_crop_classifier, embed_box_crops
from ovseg.models.prompts.similarity import encode_phrase
from ovseg.pipelines.base import DENSE_TOKEN_DEFAULTS, SamClipImage, SamClipPipeline
from ovseg.registry import BACKBONES, DETECTORS, MASK_DECODERS, PIPELINES
from ovseg.settings import merge_settings
from ovseg.structures import PointPrompts, ReferringResult

__all__ = ["GroundedReferringSegmenter"]

RANKING_DEFAULTS: dict[str, Any] = {
    "box_threshold": 0.0,
    "candidates": 16,
    "crop_logit_scale": 35.0,
    "detector_score_power": 0.5,
}
#: the smallest detector score in the logarithm (a score of exactly 0 stays rankable)
MIN_SCORE = 1e-12


@PIPELINES.register()
class GroundedReferringSegmenter(SamClipPipeline):
    """Referring segmentation: a detector's boxes for the phrase, re-ranked by CLIP crops, the
    best one segmented by SAM (see the module docstring).

    Args:
        backbone: a :class:`ClipBackbone` or its config (crops and the phrase).
        detector: an open-vocabulary detector or its config.
        decoder: a SAM-family decoder or its config.
        crop_classifier: the crop embedder (default ``MaskedCropClassifier``).
        ranking: ``box_threshold``, ``candidates``, ``crop_logit_scale``,
            ``detector_score_power``; ``box_threshold`` can be overridden per call.
        inference: image settings (``max_pixels``; the dense-token keys are accepted and unused).
        multimask: three SAM masks and the highest predicted IoU kept (else one).
        templates: templates for the phrase (``None``: the backbone's).
    """

    query_name = "phrase"

    def __init__(
        self,
        backbone: Any,
        detector: Any,
        decoder: Any,
        crop_classifier: Any = None,
        ranking: Mapping[str, Any] | None = None,
        inference: Mapping[str, Any] | None = None,
        multimask: bool = True,
        templates: str | Sequence[str] | None = None,
    ) -> None:
        self.backbone = BACKBONES.build_or_pass(backbone, "backbone (CLIP)")
        self.detector = DETECTORS.build_or_pass(detector, "detector")
        self.decoder = MASK_DECODERS.build_or_pass(decoder, "mask decoder (SAM)")
        self.crop_classifier = build_crop_classifier(crop_classifier)
        self.ranking = merge_settings(RANKING_DEFAULTS, ranking, "ranking")
        self.inference = merge_settings(DENSE_TOKEN_DEFAULTS, inference, "inference")
        self.multimask = bool(multimask)
        self.templates = templates
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    @property
    def call_settings(self) -> Mapping[str, Any]:
        return {"multimask": self.multimask, "box_threshold": self.ranking["box_threshold"]}

    def rank_boxes(
        self, image: np.ndarray, phrase: str, box_threshold: float
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The detector's candidate boxes for ``phrase`` and their ranking.

        Returns:
            ``(N, 4)`` float32 XYXY boxes (input pixels), ``(N,)`` detector scores, ``(N,)``
            crop-to-phrase cosines and ``(N,)`` float64 ranking scores (higher is better).
        """
        found = self.detector.detect(
            image,
            [phrase],
            box_threshold=box_threshold,
            max_detections=int(self.ranking["candidates"]),
        )
        scores = torch.from_numpy(found.scores).double()
        if len(found) == 0:
            empty = torch.zeros(0, dtype=torch.float64)
            return found.boxes, scores, empty, empty
        embeds = embed_box_crops(self.crop_classifier, image, found.boxes, self.backbone)
        text = encode_phrase(self.backbone, phrase, self.templates).float().cpu()
        cosine = (embeds.float() @ text).double()
        rank = (
            float(self.ranking["crop_logit_scale"]) * cosine
            + float(self.ranking["detector_score_power"]) * scores.clamp(min=MIN_SCORE).log()
        )
        return found.boxes, scores, cosine, rank

    def _predict(
        self, encoded: SamClipImage, phrase: Any, settings: Mapping[str, Any]
    ) -> ReferringResult:
        """Segment what ``phrase`` refers to in ``encoded``."""
        if not isinstance(phrase, str) or not phrase.strip():
            raise PromptError("Give the phrase to segment, e.g. predict(encoded, 'the red star').")
        height, width = encoded.size
        boxes, scores, cosine, rank = self.rank_boxes(
            encoded.image, phrase, float(settings["box_threshold"])
        )
        no_points = PointPrompts(np.zeros((0, 2), np.float32), np.zeros(0, np.int64))
        meta = {**self.meta, "query": "detector_boxes", "num_candidates": len(boxes)}
        if len(boxes) == 0:
            return ReferringResult(
                mask=np.zeros((height, width), dtype=bool),
                score=0.0,
                phrase=phrase,
                similarity=np.zeros((height, width), dtype=np.float32),
                points=no_points,
                meta={**meta, "box_xyxy": None},
            )
        best = int(rank.argmax())
        prediction = self.decoder.predict(
            boxes=boxes[best : best + 1],
            multimask=bool(settings["multimask"]),
            embedding=encoded.embedding,
        )
        mask, score, index = prediction.best()
        weights = torch.softmax(rank, dim=0).float()
        painted = box_masks(boxes, height, width).float() * weights[:, None, None]
        heat = painted.amax(dim=0)
        heat = heat / heat.max().clamp(min=torch.finfo(torch.float32).tiny)
        return ReferringResult(
            mask=mask,
            score=score,
            phrase=phrase,
            similarity=heat.numpy().astype(np.float32),
            points=no_points,
            meta={
                **meta,
                "box_xyxy": [round(float(v), 3) for v in boxes[best]],
                "box_score": round(float(scores[best]), 6),
                "box_cosine": round(float(cosine[best]), 6),
                "mask_index": index,
            },
        )
