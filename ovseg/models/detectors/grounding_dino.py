"""Grounding DINO through transformers (``GroundingDinoForObjectDetection``), loaded from a
released folder by :mod:`.hf_folder`.

The queries of one call form one caption, as transformers' processor writes it: lower-cased
phrases joined by ``". "`` with a final ``"."`` (``"a cat. a remote control."``). The model
predicts ``num_queries`` boxes (centre, size, normalised to the image) and a logit per caption
token; transformers' ``post_process_grounded_object_detection`` scores a box by the maximum
token probability ``sigmoid(logit)`` over the whole caption. Here a box's score for a query is
the maximum over that query's own tokens (``token_reduce="max"``; ``"mean"`` averages them, as
the official COCO evaluation's positive map does), so the box's best query score equals
transformers' score whenever the best token belongs to a query (not to ``[CLS]``, ``.`` or
``[SEP]``). Boxes are scaled by ``(W, H, W, H)`` of the input image.

A caption holds at most ``max_text_len`` tokens (256 for the released models); a vocabulary
that does not fit is split into several captions, each a model call with boxes of its own. A
phrase containing ``"."`` (the separator) or longer than one caption is refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ovseg.errors import ConfigError, VocabularyError
from ovseg.models.detectors.base import OpenVocabularyDetector
from ovseg.models.detectors.hf_folder import (
    import_transformers,
    load_hf_model,
    load_hf_processor,
    resolve_detector_folder,
)
from ovseg.models.detectors.owl import center_to_corners
from ovseg.registry import DETECTORS

__all__ = ["GroundingDinoDetector", "caption_of"]

TOKEN_REDUCTIONS = ("max", "mean")


def caption_of(queries: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The caption of ``queries`` and each query's character span ``[start, end)`` in it."""
    parts, spans, position = [], [], 0
    for query in queries:
        text = query.strip().lower()
        spans.append((position, position + len(text)))
        parts.append(text)
        position += len(text) + 2  # ". "
    return ". ".join(parts) + ".", spans


@DETECTORS.register(aliases=("grounding_dino",))
class GroundingDinoDetector(OpenVocabularyDetector):
    """Grounding DINO (see the module docstring), e.g. ``IDEA-Research/grounding-dino-tiny``.

    Args:
        model: a released folder or Hub repository id.
        device: where the model runs (default CPU).
        box_threshold: default ``box_threshold`` of :meth:`detect` (0.25: transformers'
            default ``threshold``).
        token_reduce: ``max`` or ``mean`` over a query's tokens.
        batch_size: images per model call.
        clip_boxes: clip boxes to the image.
        max_detections: default cut per image (None: all).
    """

    boxes_depend_on_text = True

    def __init__(
        self,
        model: str | os.PathLike,
        device: str | torch.device | None = None,
        box_threshold: float = 0.25,
        token_reduce: str = "max",
        batch_size: int = 1,
        clip_boxes: bool = True,
        max_detections: int | None = None,
    ) -> None:
        super().__init__()
        transformers = import_transformers()
        if token_reduce not in TOKEN_REDUCTIONS:
            raise ConfigError(
                f"token_reduce must be one of {TOKEN_REDUCTIONS}, not {token_reduce!r}."
            )
        self.folder = resolve_detector_folder(model)
        self.model = load_hf_model(
            transformers.GroundingDinoForObjectDetection,
            transformers.GroundingDinoConfig,
            self.folder,
            device,
        )
        self.processor = load_hf_processor(transformers.GroundingDinoProcessor, self.folder)
        self.default_box_threshold = float(box_threshold)
        self.token_reduce = token_reduce
        self.batch_size = int(batch_size)
        self.clip_boxes = bool(clip_boxes)
        self.max_detections = max_detections

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def text_length(self) -> int:
        """Tokens per caption (``[CLS]`` and ``[SEP]`` included)."""
        return int(self.model.config.max_text_len)

    def _caption_length(self, queries: Sequence[str]) -> int:
        caption, _ = caption_of(queries)
        return len(self.processor.tokenizer(caption)["input_ids"])

    def query_chunks(self, queries: Sequence[str]) -> list[list[int]]:
        for query in queries:
            if "." in query:
                raise VocabularyError(
                    f"Query {query!r} contains '.', Grounding DINO's phrase separator; remove it."
                )
        chunks: list[list[int]] = []
        current: list[int] = []
        for index, query in enumerate(queries):
            if self._caption_length([query]) > self.text_length:
                raise VocabularyError(
                    f"Query {query!r} alone is longer than Grounding DINO's caption "
                    f"({self.text_length} tokens); shorten it (it is never cut)."
                )
            trial = [queries[i] for i in current] + [query]
            if current and self._caption_length(trial) > self.text_length:
                chunks.append(current)
                current = []
            current.append(index)
        chunks.append(current)
        return chunks

    def _query_tokens(self, queries: Sequence[str]) -> tuple[dict, list[list[int]]]:
        """The caption's encoding and the token positions of each query."""
        caption, spans = caption_of(queries)
        encoding = self.processor.tokenizer(
            caption, return_offsets_mapping=True, return_token_type_ids=True
        )
        offsets = encoding.pop("offset_mapping")
        positions = []
        for start, end in spans:
            tokens = [t for t, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
            positions.append(tokens)
        return encoding, positions

    def score_chunk(
        self, images: Sequence[np.ndarray], queries: Sequence[str]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        encoding, positions = self._query_tokens(queries)
        pixels = self.processor.image_processor(list(images), return_tensors="pt")
        count = len(images)
        ids = torch.tensor([encoding["input_ids"]] * count, device=self.device)
        outputs = self.model(
            input_ids=ids,
            token_type_ids=torch.tensor([encoding["token_type_ids"]] * count, device=self.device),
            attention_mask=torch.tensor([encoding["attention_mask"]] * count, device=self.device),
            pixel_values=pixels["pixel_values"].to(self.device),
            pixel_mask=pixels["pixel_mask"].to(self.device),
        )
        logits = outputs.logits.float().cpu()  # (B, P, max_text_len)
        corners = center_to_corners(outputs.pred_boxes.float().cpu())
        results = []
        for index, image in enumerate(images):
            height, width = image.shape[:2]
            per_query = []
            for tokens in positions:
                token_logits = logits[index][:, tokens]
                per_query.append(
                    token_logits.max(dim=1).values  # sigmoid is monotonic
                    if self.token_reduce == "max"
                    else torch.logit(torch.sigmoid(token_logits).mean(dim=1).double()).float()
                )
            scores = torch.stack(per_query, dim=1)
            scale = torch.tensor([width, height, width, height], dtype=torch.float32)
            results.append((corners[index] * scale, scores))
        return results
