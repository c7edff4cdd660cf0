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

import ovseg.models.decoders.sam  # noqa: F401  (registers SamDecoder)
import ovseg.models.prompts  # noqa: F401  (registers the point selectors)
from ovseg.errors import ConfigError, PromptError
from ovseg.io import DEFAULT_MAX_PIXELS, read_image
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.models.prompts.similarity import (
    GridPlacement,
    encode_phrase,
    min_max_normalize,
    query_similarity,
)
from ovseg.pipelines.semantic import SemanticSegmenter
from ovseg.registry import BACKBONES, MASK_DECODERS, PIPELINES, POINT_SELECTORS, Registry
from ovseg.settings import merge_settings
from ovseg.structures import PointPrompts, ReferringResult

__all__ = ["ReferringSegmenter", "build_component", "sam_point_frame", "whole_image_encoder"]

DENSE_INFERENCE_DEFAULTS = {
    "short_side": 336,
    "max_long_side": 672,
    "batch_size": 1,
    "max_pixels": DEFAULT_MAX_PIXELS,
}


def build_component(value: Any, registry: Registry, what: str) -> Any:
    """A component given as an object or as a ``{type: ...}`` config of ``registry``."""
    if isinstance(value, Mapping):
        return registry.build(value)
    if value is None:
        raise ConfigError(f"The pipeline needs a {what}; give its config ({{type: ...}}).")
    return value


def whole_image_encoder(
    backbone: ClipBackbone | None, inference: Mapping[str, Any] | None
) -> tuple[SemanticSegmenter | None, dict[str, Any]]:
    """A :class:`SemanticSegmenter` used as the dense encoder: one window over the whole
    (resized) image, so the token grid spans the image. Returns it and the merged settings."""
    settings = merge_settings(DENSE_INFERENCE_DEFAULTS, inference, "inference")
    if backbone is None:
        return None, settings
    encoder = SemanticSegmenter(backbone, inference={"mode": "whole", **settings})
    return encoder, settings


def sam_point_frame(points: PointPrompts) -> tuple[np.ndarray, np.ndarray]:
    """``(1, P, 2)`` coordinates in SAM's frame (pixel ``i`` at ``i``) and ``(1, P)`` labels."""
    return (points.coords - 0.5)[None], points.labels[None]


def best_mask(prediction) -> tuple[np.ndarray, float, int]:
    """The mask of the first prompt with the highest predicted IoU: ``(H, W)`` bool, IoU, index."""
    scores = prediction.iou_scores[0].detach().float().cpu()
    index = int(torch.argmax(scores))
    return prediction.masks[0, index].detach().cpu().numpy(), float(scores[index]), index


class SamClipImage:
    """The image a SAM-based pipeline works on: embedded for SAM once, CLIP tokens on demand.

    Needs ``decoder`` (a SamDecoder), ``encoder`` (the whole-image dense encoder, or None) and
    ``inference["max_pixels"]``; :meth:`_forget_image_results` drops other per-image caches.
    """

    _image: np.ndarray | None
    _tokens: torch.Tensor | None

    def set_image(self, image: Any) -> np.ndarray:
        """Read ``image`` (path, bytes, PIL, array) and embed it for SAM; CLIP runs on demand."""
        array = read_image(image, max_pixels=self.inference["max_pixels"])
        self.decoder.set_image(array)
        self._image, self._tokens = array, None
        self._forget_image_results()
        return array

    def _forget_image_results(self) -> None:
        """Drop what was computed for the previous image (none here)."""

    def _require_image(self) -> np.ndarray:
        if self._image is None:
            raise PromptError("No image set; call set_image(image) first (or call the pipeline).")
        return self._image

    def dense_tokens(self) -> torch.Tensor:
        """``(D, h, w)`` L2-normalised CLIP tokens of the set image, spanning it (computed once)."""
        image = self._require_image()
        if self.encoder is None:
            raise ConfigError(
                "This pipeline has no CLIP backbone; give backbone={...} to segment by phrase, "
                "or use predict_from_embedding with your own tokens."
            )
        if self._tokens is None:
            self._tokens = self.encoder.encode_images([image])[0].tokens[0]
        return self._tokens


@PIPELINES.register()
class ReferringSegmenter(SamClipImage):
    """Referring segmentation: a phrase (or any query embedding) -> one mask.

    Args:
        backbone: a :class:`ClipBackbone` or its config; may be ``None`` when only
            :meth:`predict_from_embedding` is used.
        decoder: a :class:`~ovseg.models.decoders.sam.SamDecoder` or its config.
        selector: a point selector or its config (default ``{type: SasPSelector}``).
        inference: dense-encoder settings ``short_side``, ``max_long_side``, ``batch_size``,
            ``max_pixels``.
        multimask: ask SAM for three masks and keep the highest predicted IoU (else one).
        templates: templates for the phrase (``None``: the backbone's; ``none`` uses the
            phrase as it is, which suits long referring expressions).
        vocabulary: accepted so that presets can share one; a referring query is a phrase.
    """

    def __init__(
        self,
        backbone: ClipBackbone | Mapping[str, Any] | None = None,
        decoder: Any = None,
        selector: Any = None,
        inference: Mapping[str, Any] | None = None,
        multimask: bool = True,
        templates: str | Sequence[str] | None = None,
        vocabulary: Any = None,
    ) -> None:
        if isinstance(backbone, Mapping):
            backbone = BACKBONES.build(backbone)
        self.backbone = backbone
        self.decoder = build_component(decoder, MASK_DECODERS, "mask decoder (SAM)")
        self.selector = build_component(
            selector if selector is not None else {"type": "SasPSelector"},
            POINT_SELECTORS,
            "point selector",
        )
        self.encoder, self.inference = whole_image_encoder(backbone, inference)
        self.multimask = bool(multimask)
        self.templates = templates
        self.vocabulary = vocabulary
        self._image: np.ndarray | None = None
        self._tokens: torch.Tensor | None = None
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    # ----------------------------------------------------------------- prediction
    def segment_similarity(
        self,
        similarity: torch.Tensor,
        placement: GridPlacement,
        phrase: str,
        meta: Mapping[str, Any] | None = None,
    ) -> ReferringResult:
        """Points from a ``(h, w)`` similarity grid, then SAM's mask for them."""
        image = self._require_image()
        if placement.image_size != image.shape[:2]:
            raise ConfigError(
                f"The grid is placed on a {placement.image_size} image but the set image is "
                f"{image.shape[:2]}."
            )
        points = self.selector(similarity, placement)
        if len(points) == 0:
            raise PromptError("The point selector chose no point; lower its thresholds.")
        coords, labels = sam_point_frame(points)
        prediction = self.decoder.predict(
            point_coords=coords, point_labels=labels, multimask=self.multimask
        )
        mask, score, index = best_mask(prediction)
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

    def predict(self, phrase: str) -> ReferringResult:
        """Segment what ``phrase`` refers to in the image given to :meth:`set_image`."""
        tokens = self.dense_tokens()
        query = encode_phrase(self.backbone, phrase, self.templates)
        similarity = query_similarity(query, tokens, metric="cosine").cpu()
        height, width = self._require_image().shape[:2]
        return self.segment_similarity(
            similarity, GridPlacement.whole(height, width), phrase, {"query": "clip_text"}
        )

    def predict_from_embedding(
        self,
        query: torch.Tensor | np.ndarray,
        image_tokens: torch.Tensor | np.ndarray,
        *,
        grid_size: tuple[int, int] | None = None,
        region: str | Sequence[float] | None = None,
        metric: str = "dot",
        phrase: str = "<SEG>",
    ) -> ReferringResult:
        """Segment with any query embedding compared with given image tokens.

        Args:
            query: ``(D,)`` query embedding (e.g. a ``<SEG>`` hidden state).
            image_tokens: ``(D, h, w)`` or ``(h * w, D)`` (row-major patches) in the query's
                space.
            grid_size: ``(h, w)`` of a token sequence (default: square).
            region: the input-image rectangle the tokens cover: ``None`` / ``"whole"``,
                ``"center_crop"`` (CLIP / LLaVA preprocessing) or ``(x0, y0, x1, y1)``.
            metric: ``"dot"`` (READ) or ``"cosine"``.
            phrase: recorded in the result.

        The image must have been given to :meth:`set_image`. READ also feeds the ``<SEG>``
        embedding to its fine-tuned SAM as a sparse prompt next to the points; a plain SAM
        takes the points only.
        """
        height, width = self._require_image().shape[:2]
        similarity = query_similarity(query, image_tokens, grid_size=grid_size, metric=metric)
        placement = GridPlacement.create((height, width), region)
        return self.segment_similarity(
            similarity.cpu(), placement, phrase, {"query": "embedding", "metric": metric}
        )

    def __call__(self, image: Any, phrase: str) -> ReferringResult:
        self.set_image(image)
        return self.predict(phrase)
