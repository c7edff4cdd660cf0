"""Instances with no vocabulary: every SAM proposal is named by a CaSED search of its own.

For the image given to :meth:`VocabFreeInstanceSegmenter.set_image`:

1. the instance pipeline's SAM proposals (cached by that pipeline);
2. each mask's region embedding: the masked crop through CLIP (outside pixels set to CLIP's
   mean colour), as :meth:`CasedSearch.embed_regions` makes it, or with ``crop_classifier``
   that classifier's crop (e.g. a square 1.3x the mask's box with its surroundings:
   ``{type: MaskedCropClassifier, context_scale: 1.3, mask_background: false}``, for a CLIP
   trained on such crops);
3. each embedding searched in the text database (:meth:`CasedSearch.name_regions`): the mask
   takes the best candidate name, and score = that name's CaSED score x SAM's predicted IoU;
4. score threshold, class-wise box NMS and the instance cap of the instance pipeline's
   ``postprocess`` settings.

``class_names`` of the result are the names found, in order of first use, so the output reads
like one made with a user vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ovseg.errors import ConfigError
from ovseg.models.classifiers import (
    MaskContext,
    boxes_from_masks,
    build_crop_classifier,
    class_wise_nms,
)
from ovseg.pipelines.base import PromptablePipeline, SamClipImage
from ovseg.registry import PIPELINES
from ovseg.structures import Instances


def _empty(height: int, width: int, meta: dict[str, Any]) -> Instances:
    return Instances(
        masks=np.zeros((0, height, width), dtype=bool),
        boxes=np.zeros((0, 4), dtype=np.float32),
        scores=np.zeros(0, dtype=np.float32),
        labels=np.zeros(0, dtype=np.int64),
        class_names=[],
        meta=meta,
    )


@PIPELINES.register()
class VocabFreeInstanceSegmenter(PromptablePipeline):
    """Instance segmentation whose names come from a text database (CaSED), mask by mask.

    Args:
        instance: an :class:`~ovseg.pipelines.instance.InstanceSegmenter` (its SAM proposals
            and ``postprocess`` thresholds are used; its vocabulary is not).
        search: a :class:`~ovseg.cased.search.CasedSearch` over the same CLIP.
        crop_classifier: None (CaSED's masked region crop) or a crop classifier (or its config)
            whose ``embed`` gives the region embeddings that are searched.

    :meth:`encode` is the instance pipeline's; a vocabulary given to :meth:`predict` names the
    proposals with it instead of searching.
    """

    encoded_type = SamClipImage

    def __init__(self, instance: Any, search: Any, crop_classifier: Any = None) -> None:
        if getattr(instance, "proposal_source", "sam") != "sam":
            raise ConfigError(
                "Vocabulary-free instances name SAM's class-agnostic proposals; this instance "
                "pipeline segments a detector's boxes, which need a vocabulary. Give one with "
                "proposals: sam (a preset's pipelines.instance_sam section is used when present)."
            )
        self.instance = instance
        self.search = search
        self.crop_classifier = (
            None if crop_classifier is None else build_crop_classifier(crop_classifier)
        )
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    @property
    def call_settings(self) -> Mapping[str, Any]:
        return self.instance.call_settings

    def encode(self, image: Any) -> SamClipImage:
        return self.instance.encode(image)

    def region_embeddings(self, image: np.ndarray, masks: torch.Tensor) -> torch.Tensor:
        """``(M, H, W)`` bool masks of ``image`` -> ``(M, D)`` embeddings to search."""
        if self.crop_classifier is None:
            return self.search.embed_regions(image, masks=masks.numpy())
        context = MaskContext(image=image, tokens=None, backbone=self.search.backbone)
        return self.crop_classifier.embed(masks, context)

    def _predict(
        self, encoded: SamClipImage, vocabulary: Any, settings: Mapping[str, Any]
    ) -> Instances:
        """Named instances of ``encoded``, best first; ``(M, H, W)`` masks in its pixels."""
        if vocabulary is not None:  # a vocabulary given: the usual instance pipeline
            return self.instance.predict(encoded, vocabulary, **settings)
        image = encoded.image
        height, width = image.shape[:2]
        post = settings
        meta = {
            "vocab_free": {
                "database": str(self.search.database.path),
                "pos_filter": self.search.pos_filter,
                "region_crop": "cased" if self.crop_classifier is None else "crop_classifier",
            }
        }
        proposals = self.instance.proposals(encoded)
        masks = torch.as_tensor(proposals.masks).bool().cpu()
        ious = torch.as_tensor(proposals.iou_scores).float().cpu().reshape(-1)
        keep = masks.flatten(1).sum(dim=1) >= max(1, int(post["min_area"]))
        masks, ious = masks[keep], ious[keep]
        if not len(masks):
            return _empty(height, width, meta)
        found = self.search.name_regions(self.region_embeddings(image, masks))
        names = [result.best for result in found]
        name_scores = torch.tensor([float(result.scores[0]) for result in found])
        scores = name_scores * ious.clamp(0.0, 1.0)
        vocabulary = list(dict.fromkeys(names))
        labels = torch.tensor([vocabulary.index(name) for name in names], dtype=torch.long)
        keep = scores >= float(post["score_threshold"])
        masks, scores, labels = masks[keep], scores[keep], labels[keep]
        if not len(masks):
            return _empty(height, width, meta)
        boxes = boxes_from_masks(masks)
        order = class_wise_nms(
            scores, labels, boxes=boxes, iou_threshold=float(post["nms_threshold"]), mode="box"
        )[: int(post["max_instances"])]
        order_t = torch.from_numpy(np.asarray(order))
        used = list(dict.fromkeys(labels[order_t].tolist()))  # names of the kept masks only
        return Instances(
            masks=masks[order_t].numpy(),
            boxes=boxes[order_t].numpy(),
            scores=scores[order_t].numpy(),
            labels=np.array([used.index(int(label)) for label in labels[order_t]]),
            class_names=[vocabulary[index] for index in used],
            meta=meta,
        )
