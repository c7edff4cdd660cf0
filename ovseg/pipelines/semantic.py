"""``SemanticSegmenter``: training-free open-vocabulary semantic segmentation with dense CLIP.

Flow for one image (HWC uint8 RGB, input-image pixels):

1. resize (keep ratio) so the short side is ``inference.short_side`` (long side capped);
2. cut sliding windows (``crop``/``stride``) or take the whole image, normalise, and encode every
   window with the backbone's dense mode -> L2-normalised tokens ``(D, h, w)`` per window
   (windows of many images run through the backbone together, ``batch_size`` at a time);
3. per vocabulary: cosine of tokens and query embeddings -> ``(Q, h, w)`` per window, upsampled
   to the window and averaged where windows overlap -> ``(Q, H', W')``, then upsampled to the
   input size;
4. optional PAMR on those cosine maps, then ``logit_scale`` x, softmax over queries, max over
   each class's synonyms, area / probability thresholds -> labels in vocabulary order.

Steps 1-2 are cached by :meth:`set_image`, so :meth:`predict` with another vocabulary costs only
step 3-4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.inference.pamr import PAMR
from ovseg.inference.resize import resize_bilinear
from ovseg.inference.sliding import Window, average_window_scores, sliding_windows, whole_window
from ovseg.io import DEFAULT_MAX_PIXELS
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.pipelines.base import SemanticPipelineBase, prepare_image
from ovseg.registry import BACKBONES, PIPELINES
from ovseg.settings import merge_settings
from ovseg.structures import OVSegResult
from ovseg.vocab import Vocabulary

_INFERENCE_DEFAULTS = {
    "short_side": None,
    "max_long_side": None,
    "mode": "slide",
    "crop_size": 224,
    "stride": 112,
    "batch_size": 16,
    "max_pixels": DEFAULT_MAX_PIXELS,
}
_POSTPROCESS_DEFAULTS = {
    "prob_threshold": 0.0,
    "area_threshold": 0.0,
    "background_index": "auto",
    "pamr": None,
}


@dataclass
class ImageFeatures:
    """Cached dense features of one image.

    ``tokens[i]`` is ``(D, h_i, w_i)`` L2-normalised for ``windows[i]`` (resized-image pixels);
    ``guide`` is the normalised resized image ``(1, 3, H', W')`` kept for PAMR (or None).
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    windows: list[Window]
    tokens: list[torch.Tensor]
    guide: torch.Tensor | None


@PIPELINES.register()
class SemanticSegmenter(SemanticPipelineBase):
    """Dense-CLIP semantic segmentation for any vocabulary.

    Args:
        backbone: a :class:`ClipBackbone` or its config mapping.
        logit_scale: multiplier of the cosine scores before the softmax.
        inference: ``short_side``, ``max_long_side``, ``mode`` (``slide``/``whole``),
            ``crop_size``, ``stride``, ``batch_size`` (windows per backbone call), ``max_pixels``
            (larger inputs are refused before decoding; None disables the cap).
        postprocess: ``prob_threshold``, ``area_threshold``, ``background_index`` (``auto``: the
            class named "background", if any; an int; or None), ``pamr`` (None or
            ``{num_iter, dilations}``).
        vocabulary: default vocabulary (see :class:`Vocabulary.create`).
    """

    def __init__(
        self,
        backbone: ClipBackbone | Mapping[str, Any],
        logit_scale: float = 40.0,
        inference: Mapping[str, Any] | None = None,
        postprocess: Mapping[str, Any] | None = None,
        vocabulary: Any = None,
    ) -> None:
        if isinstance(backbone, Mapping):
            backbone = BACKBONES.build(backbone)
        self.backbone = backbone
        self.logit_scale = float(logit_scale)
        self.inference = merge_settings(_INFERENCE_DEFAULTS, inference, "inference")
        self.postprocess = merge_settings(_POSTPROCESS_DEFAULTS, postprocess, "postprocess")
        if self.inference["mode"] not in ("slide", "whole"):
            raise ConfigError(
                f"inference.mode must be 'slide' or 'whole', not {self.inference['mode']!r}."
            )
        pamr = self.postprocess["pamr"]
        self.pamr = PAMR(**dict(pamr)).to(backbone.device) if pamr else None
        self.vocabulary = Vocabulary.create(vocabulary) if vocabulary is not None else None
        self._features: ImageFeatures | None = None
        self.meta: dict[str, Any] = {}  # copied into every result (create_pipeline: the source)
        self.config: Any = None  # the resolved config this pipeline was built from, if any

    # ----------------------------------------------------------------- image side
    def _windows(self, height: int, width: int) -> list[Window]:
        if self.inference["mode"] == "whole":
            return whole_window(height, width)
        return sliding_windows(height, width, self.inference["crop_size"], self.inference["stride"])

    def _prepare(self, image: Any) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image -> normalised resized tensor ``(1, 3, H', W')`` and the original ``(H, W)``."""
        return prepare_image(image, self.inference, self.backbone.device, self.backbone.normalize)

    def encode_images(self, images: Sequence[Any]) -> list[ImageFeatures]:
        """Dense features of several images; their windows share backbone batches by size."""
        prepared = [self._prepare(image) for image in images]
        jobs: dict[tuple[int, int], list[tuple[int, int]]] = {}
        window_lists = []
        for image_index, (tensor, _) in enumerate(prepared):
            windows = self._windows(*tensor.shape[-2:])
            window_lists.append(windows)
            for window_index, window in enumerate(windows):
                jobs.setdefault(window.size, []).append((image_index, window_index))
        tokens: list[list[torch.Tensor | None]] = [[None] * len(w) for w in window_lists]
        batch_size = max(1, int(self.inference["batch_size"]))
        for members in jobs.values():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                crops = []
                for image_index, window_index in chunk:
                    win = window_lists[image_index][window_index]
                    crops.append(prepared[image_index][0][0, :, win.y1 : win.y2, win.x1 : win.x2])
                dense = self.backbone.encode_dense(torch.stack(crops))
                dense = F.normalize(dense, dim=1)
                for (image_index, window_index), item in zip(chunk, dense):
                    tokens[image_index][window_index] = item
        return [
            ImageFeatures(
                original_size=original,
                resized_size=tuple(tensor.shape[-2:]),
                windows=window_lists[i],
                tokens=tokens[i],
                guide=tensor if self.pamr is not None else None,
            )
            for i, (tensor, original) in enumerate(prepared)
        ]

    # ----------------------------------------------------------------- text side
    @torch.inference_mode()
    def query_scores(self, features: ImageFeatures, vocab: Vocabulary) -> torch.Tensor:
        """Cosine scores ``(Q, H, W)`` of every query at input-image size (before the scale)."""
        text = self.backbone.encode_text(vocab.queries).to(self.backbone.device)
        window_scores = [torch.einsum("dhw,qd->qhw", t, text) for t in features.tokens]
        scores = average_window_scores(window_scores, features.windows, *features.resized_size)
        scores = F.interpolate(
            scores[None], size=features.original_size, mode="bilinear", align_corners=False
        )
        if self.pamr is not None:
            guide = resize_bilinear(features.guide, features.original_size)
            scores = self.pamr(guide, scores)
        return scores[0]

    def vocabulary_logits(self, features: ImageFeatures, vocab: Vocabulary) -> torch.Tensor:
        """``(Q, H, W)`` cosine score maps x ``logit_scale``."""
        return self.query_scores(features, vocab) * self.logit_scale

    def labels_from_scores(self, scores: torch.Tensor, vocab: Vocabulary) -> OVSegResult:
        """Labels of the ``(Q, H, W)`` cosine maps of :meth:`query_scores`."""
        return self.result_from_logits(scores * self.logit_scale, vocab)
