"""``ReferringSegmenter``: text-prompted segmentation, a query's similarity map as SAM points.

Flow for one image (HWC uint8 RGB, input-image pixels) and one phrase:

1. dense CLIP tokens of the whole image, resized keeping its ratio (``inference.short_side``,
   ``max_long_side``), L2-normalised (the :class:`SemanticSegmenter` encoder in ``whole``
   mode); the patch grid spans the image;
2. the phrase through CLIP's text encoder (``templates``), cosine with every token -> a
   ``(h, w)`` similarity grid;
3. a point selector (default READ's :class:`~ovseg.models.prompts.SasPSelector`) turns the grid
   into point prompts with labels 1 / 0 / -1;
4. SAM decodes the points; with ``multimask`` it proposes three masks and the one with the
   highest predicted IoU is kept (READ's own decoder is single-mask; its SAM predictor path
   takes the argmax of the scores as here). The result's score is that predicted IoU.

:meth:`ReferringSegmenter.predict_from_embedding` runs steps 3-4 for any query embedding and
image tokens, e.g. a multimodal LLM's ``<SEG>`` token and its image tokens (READ's setting: dot
product, LLaVA's centre crop as the grid region).

Points: :class:`~ovseg.structures.PointPrompts` holds continuous coordinates with pixel centres
at ``i + 0.5``; :class:`~ovseg.models.decoders.sam.SamDecoder` takes SAM's frame, where the
integer ``x`` is pixel column ``x`` (SAM adds the half pixel), so 0.5 is subtracted on the way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ovseg.errors import ConfigError, PromptError
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.models.prompts.similarity import (
    GridPlacement,
    encode_phrase,
    min_max_normalize,
    query_similarity,
)
from ovseg.pipelines.base import DENSE_TOKEN_DEFAULTS, SamClipImage, SamClipPipeline
from ovseg.registry import BACKBONES, MASK_DECODERS, PIPELINES, POINT_SELECTORS
from ovseg.settings import merge_settings
from ovseg.structures import ReferringResult

__all__ = ["ReferringSegmenter"]


@PIPELINES.register()
class ReferringSegmenter(SamClipPipeline):
    """Referring segmentation: a phrase (or any query embedding) -> one mask.

    Args:
        backbone: a :class:`ClipBackbone` or its config; may be ``None`` when only
            :meth:`predict_from_embedding` is used.
        decoder: a SAM-family decoder (``SamDecoder``, ``Sam2Decoder``, ``HqSamDecoder``) or its
            config.
        selector: a point selector or its config (default ``{type: SasPSelector}``).
        inference: dense-encoder settings ``short_side``, ``max_long_side``, ``batch_size``,
            ``max_pixels``.
        multimask: ask SAM for three masks and keep the highest predicted IoU (else one);
            can be overridden per call (``predict(encoded, phrase, multimask=False)``).
        templates: templates for the phrase (``None``: the backbone's; ``none`` uses the
            phrase as it is, which suits long referring expressions).
    """

    def __init__(
        self,
        backbone: ClipBackbone | Mapping[str, Any] | None = None,
        decoder: Any = None,
        selector: Any = None,
        inference: Mapping[str, Any] | None = None,
        multimask: bool = True,
        templates: str | Sequence[str] | None = None,
    ) -> None:
        if isinstance(backbone, Mapping):
            backbone = BACKBONES.build(backbone)
        self.backbone = backbone
        self.decoder = MASK_DECODERS.build_or_pass(decoder, "mask decoder (SAM)")
        self.selector = POINT_SELECTORS.build_or_pass(
            selector if selector is not None else {"type": "SasPSelector"}, "point selector"
        )
        self.inference = merge_settings(DENSE_TOKEN_DEFAULTS, inference, "inference")
        self.multimask = bool(multimask)
        self.templates = templates
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    query_name = "phrase"

    @property
    def call_settings(self) -> Mapping[str, Any]:
        return {"multimask": self.multimask}

    # ----------------------------------------------------------------- prediction
    def segment_similarity(
        self,
        encoded: SamClipImage,
        similarity: torch.Tensor,
        placement: GridPlacement,
        phrase: str,
        meta: Mapping[str, Any] | None = None,
        *,
        multimask: bool | None = None,
    ) -> ReferringResult:
        """Points from a ``(h, w)`` similarity grid, then SAM's mask for them."""
        if placement.image_size != encoded.size:
            raise ConfigError(
                f"The grid is placed on a {placement.image_size} image but the encoded image is "
                f"{encoded.size}."
            )
        # a very thin image gives a grid one cell wide: repeat its cells (the grid still spans
        # the image) so the selector's down-sampling has at least one cell per side
        cells = int(getattr(self.selector, "down_sample", 1) or 1)
        if min(similarity.shape) < cells:
            size = (max(similarity.shape[0], cells), max(similarity.shape[1], cells))
            similarity = torch.nn.functional.interpolate(
                similarity[None, None].float(), size=size, mode="nearest"
            )[0, 0]
        points = self.selector(similarity, placement)
        if len(points) == 0:
            raise PromptError("The point selector chose no point; lower its thresholds.")
        coords, labels = points.sam_frame()
        prediction = self.decoder.predict(
            point_coords=coords,
            point_labels=labels,
            multimask=self.multimask if multimask is None else bool(multimask),
            embedding=encoded.embedding,
        )
        mask, score, index = prediction.best()
        heat = placement.to_image(min_max_normalize(similarity.detach().float().cpu()))
        return ReferringResult(
            mask=mask,
            score=score,
            phrase=phrase,
            similarity=heat.numpy().astype(np.float32),
            points=points,
            meta={
                **self.meta,
                **dict(meta or {}),
                "grid_size": list(similarity.shape),
                "mask_index": index,
                "num_positive": int((points.labels == 1).sum()),
                "num_negative": int((points.labels == 0).sum()),
            },
        )

    def _predict(
        self, encoded: SamClipImage, phrase: Any, settings: Mapping[str, Any]
    ) -> ReferringResult:
        """Segment what ``phrase`` refers to in ``encoded``."""
        if not isinstance(phrase, str) or not phrase.strip():
            raise PromptError("Give the phrase to segment, e.g. predict(encoded, 'the red star').")
        tokens = self.dense_tokens(encoded)
        query = encode_phrase(self.backbone, phrase, self.templates)
        similarity = query_similarity(query, tokens, metric="cosine").cpu()
        return self.segment_similarity(
            encoded,
            similarity,
            GridPlacement.whole(*encoded.size),
            phrase,
            {"query": "clip_text"},
            multimask=settings["multimask"],
        )

    def predict_from_embedding(
        self,
        query: torch.Tensor | np.ndarray,
        image_tokens: torch.Tensor | np.ndarray,
        *,
        encoded: SamClipImage | None = None,
        grid_size: tuple[int, int] | None = None,
        region: str | Sequence[float] | None = None,
        metric: str = "dot",
        phrase: str = "<SEG>",
    ) -> ReferringResult:
        """Segment with any query embedding compared with given image tokens.

        Args:
            encoded: the image from :meth:`encode` (None: the one given to :meth:`set_image`).
            query: ``(D,)`` query embedding (e.g. a ``<SEG>`` hidden state).
            image_tokens: ``(D, h, w)`` or ``(h * w, D)`` (row-major patches) in the query's
                space.
            grid_size: ``(h, w)`` of a token sequence (default: square).
            region: the input-image rectangle the tokens cover: ``None`` / ``"whole"``,
                ``"center_crop"`` (CLIP / LLaVA preprocessing) or ``(x0, y0, x1, y1)``.
            metric: ``"dot"`` (READ) or ``"cosine"``.
            phrase: recorded in the result.

        READ also feeds the ``<SEG>`` embedding to its fine-tuned SAM as a sparse prompt next
        to the points; a plain SAM takes the points only.
        """
        if encoded is None:
            encoded = self._current
        if encoded is None:
            raise PromptError("No image; pass encode(image) or call set_image(image) first.")
        similarity = query_similarity(query, image_tokens, grid_size=grid_size, metric=metric)
        placement = GridPlacement.create(encoded.size, region)
        return self.segment_similarity(
            encoded, similarity.cpu(), placement, phrase, {"query": "embedding", "metric": metric}
        )
