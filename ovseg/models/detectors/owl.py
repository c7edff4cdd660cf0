"""OWL-ViT and OWLv2 through transformers (``OwlViTForObjectDetection``,
``Owlv2ForObjectDetection``), loaded from released folders by :mod:`.hf_folder`.

Per image, every patch token predicts one box (``pred_boxes``: centre, size, normalised) and a
logit per query; a query's score is ``sigmoid(logit)``, and a box's label the query of the
highest logit, as transformers' ``post_process_object_detection``. Coordinate frames, as the processors make them:

* OWL-ViT resizes the image to the model's square input without keeping its aspect ratio, so a
  normalised box is scaled by ``(W, H, W, H)``;
* OWLv2 first pads the image at the bottom and right to a square of side ``max(H, W)``, so a
  normalised box is scaled by ``max(H, W)`` on both axes (boxes may reach into the padding;
  they are clipped to the image unless ``clip_boxes=False``).

Queries are tokenised one by one (at most the text model's ``max_position_embeddings`` tokens,
16 for the released models, start and end tokens included); a longer query is refused. The boxes
do not depend on the text, so a vocabulary is split into calls of ``max_queries_per_call``
queries whose scores are put side by side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ovseg.errors import VocabularyError
from ovseg.models.detectors.base import OpenVocabularyDetector
from ovseg.models.detectors.hf_folder import (
    import_transformers,
    load_hf_model,
    load_hf_processor,
    resolve_detector_folder,
)
from ovseg.registry import DETECTORS

__all__ = ["OwlDetector", "OwlViTDetector", "Owlv2Detector"]


def center_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` ``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


class OwlDetector(OpenVocabularyDetector):
    """Shared by OWL-ViT and OWLv2 (see the module docstring).

    Args:
        model: a released folder or Hub repository id.
        device: where the model runs (default CPU).
        box_threshold: default ``box_threshold`` of :meth:`detect`.
        batch_size: images per model call.
        max_queries_per_call: queries per model call.
        clip_boxes: clip boxes to the image.
        max_detections: default cut per image (None: all).
        preprocess_on_device: resize, pad and normalise the images on the model's device (the
            torchvision image processors of transformers >= 5 take a ``device``; elsewhere the
            CPU does it). Off by default: transformers' own pipelines preprocess on the CPU,
            and a GPU's resampling rounds differently.
    """

    default_box_threshold = 0.1
    pads_to_square = False
    classes: tuple[str, str, str] = ("", "", "")  # (model, config, processor) class names

    def __init__(
        self,
        model: str | os.PathLike,
        device: str | torch.device | None = None,
        box_threshold: float = 0.1,
        batch_size: int = 1,
        max_queries_per_call: int = 256,
        clip_boxes: bool = True,
        max_detections: int | None = None,
        preprocess_on_device: bool = False,
    ) -> None:
        super().__init__()
        transformers = import_transformers()
        model_cls, config_cls, processor_cls = (getattr(transformers, n) for n in self.classes)
        self.folder = resolve_detector_folder(model)
        self.model = load_hf_model(model_cls, config_cls, self.folder, device)
        self.processor = load_hf_processor(processor_cls, self.folder)
        self._configure(
            box_threshold,
            batch_size,
            max_queries_per_call,
            clip_boxes,
            max_detections,
            preprocess_on_device,
        )

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        processor: object,
        box_threshold: float = 0.1,
        batch_size: int = 1,
        max_queries_per_call: int = 256,
        clip_boxes: bool = True,
        max_detections: int | None = None,
        preprocess_on_device: bool = False,
    ) -> OwlDetector:
        """Wrap an already built transformers detection model and its processor (e.g. a
        random-init model for speed measurements); the model keeps its device and dtype."""
        detector = cls.__new__(cls)
        OpenVocabularyDetector.__init__(detector)
        detector.folder = None
        detector.model = model.eval()
        detector.processor = processor
        detector._configure(
            box_threshold,
            batch_size,
            max_queries_per_call,
            clip_boxes,
            max_detections,
            preprocess_on_device,
        )
        return detector

    def _configure(
        self,
        box_threshold: float,
        batch_size: int,
        max_queries_per_call: int,
        clip_boxes: bool,
        max_detections: int | None,
        preprocess_on_device: bool,
    ) -> None:
        self.default_box_threshold = float(box_threshold)
        self.preprocess_on_device = bool(preprocess_on_device)
        self.batch_size = int(batch_size)
        self.max_queries_per_call = max(1, int(max_queries_per_call))
        self.clip_boxes = bool(clip_boxes)
        self.max_detections = max_detections

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def text_length(self) -> int:
        """Tokens per query the text model takes (start and end tokens included)."""
        return int(self.model.config.text_config.max_position_embeddings)

    def query_chunks(self, queries: Sequence[str]) -> list[list[int]]:
        lengths = [len(ids) for ids in self.processor.tokenizer(list(queries))["input_ids"]]
        too_long = [(q, n) for q, n in zip(queries, lengths, strict=True) if n > self.text_length]
        if too_long:
            query, count = too_long[0]
            raise VocabularyError(
                f"Query {query!r} is {count} tokens long but this OWL model reads at most "
                f"{self.text_length} (start and end included); shorten it (it is never cut)."
            )
        step = self.max_queries_per_call
        return [list(range(i, min(i + step, len(queries)))) for i in range(0, len(queries), step)]

    def score_chunk(
        self, images: Sequence[np.ndarray], queries: Sequence[str]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        image_processor = self.processor.image_processor
        options = {}
        if self.preprocess_on_device and "device" in getattr(
            image_processor, "_valid_kwargs_names", ()
        ):
            options["device"] = self.device
        pixels = image_processor(list(images), return_tensors="pt", **options)
        text = self.processor.tokenizer(
            list(queries) * len(images),
            padding="max_length",
            max_length=self.text_length,
            return_tensors="pt",
        )
        outputs = self.model(
            input_ids=text["input_ids"].to(self.device),
            attention_mask=text["attention_mask"].to(self.device),
            pixel_values=pixels["pixel_values"].to(self.device, self.model.dtype),
        )
        corners = center_to_corners(outputs.pred_boxes.float().cpu())
        scores = outputs.logits.float().cpu()
        results = []
        for index, image in enumerate(images):
            height, width = image.shape[:2]
            if self.pads_to_square:
                side = float(max(height, width))
                scale = torch.tensor([side, side, side, side])
            else:
                scale = torch.tensor([width, height, width, height], dtype=torch.float32)
            results.append((corners[index] * scale, scores[index]))
        return results


@DETECTORS.register(aliases=("owlvit",))
class OwlViTDetector(OwlDetector):
    """OWL-ViT (``OwlViTForObjectDetection``), e.g. ``google/owlvit-base-patch32``."""

    classes = ("OwlViTForObjectDetection", "OwlViTConfig", "OwlViTProcessor")


@DETECTORS.register(aliases=("owlv2",))
class Owlv2Detector(OwlDetector):
    """OWLv2 (``Owlv2ForObjectDetection``), e.g. ``google/owlv2-base-patch16-ensemble``."""

    classes = ("Owlv2ForObjectDetection", "Owlv2Config", "Owlv2Processor")
    pads_to_square = True
