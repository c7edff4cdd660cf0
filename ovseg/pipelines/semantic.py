"""``SemanticSegmenter``: training-free open-vocabulary semantic segmentation with dense CLIP.

Flow for one image (HWC uint8 RGB, input-image pixels):

1. resize (keep ratio) so the short side is ``inference.short_side`` (long side capped); a side
   shorter than one window (``min_side``: the backbone's patch) is zero-padded;
2. cut sliding windows (``crop``/``stride``) or take the whole image, normalise, and encode every
   window with the backbone's dense mode -> L2-normalised tokens ``(D, h, w)`` per window
   (windows of many images run through the backbone together, ``batch_size`` at a time);
3. per vocabulary: cosine of tokens and query embeddings -> ``(Q, h, w)`` per window, upsampled
   to the window and averaged where windows overlap -> ``(Q, H', W')``, then upsampled to the
   working resolution (the input size unless it exceeds ``inference.max_work_pixels``);
4. optional PAMR on those cosine maps, then ``logit_scale`` x, softmax over queries, max over
   each class's synonyms, area / probability thresholds -> labels in vocabulary order, at the
   input size. Queries are scored in chunks when their maps would exceed
   ``inference.score_bytes`` (:mod:`ovseg.inference.labels`).

Steps 1-2 are :meth:`SemanticSegmenter.encode` (a :class:`SemanticImage` value);
:meth:`predict` with another vocabulary costs only steps 3-4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.inference.pamr import PAMR
from ovseg.inference.resize import PreparedImage, prepare_image, resize_bilinear, to_device_pixels
from ovseg.inference.sliding import (
    Window,
    average_window_scores,
    check_window_settings,
    sliding_windows,
    whole_window,
)
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.pipelines.base import (
    MEMORY_DEFAULTS,
    SEMANTIC_POSTPROCESS_DEFAULTS,
    DenseSemanticPipeline,
    SemanticImage,
    decode_image,
)
from ovseg.registry import BACKBONES, PIPELINES
from ovseg.settings import merge_settings
from ovseg.vocab import Vocabulary

_INFERENCE_DEFAULTS = {
    "short_side": None,
    "max_long_side": None,
    "mode": "slide",
    "crop_size": 224,
    "stride": 112,
    "batch_size": 16,
    **MEMORY_DEFAULTS,
}
_POSTPROCESS_DEFAULTS = {**SEMANTIC_POSTPROCESS_DEFAULTS, "pamr": None}


def _float_setting(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}.") from None
    if isinstance(value, bool) or number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number, got {value!r}.")
    return number


@PIPELINES.register()
class SemanticSegmenter(DenseSemanticPipeline):
    """Dense-CLIP semantic segmentation for any vocabulary.

    Args:
        backbone: a :class:`ClipBackbone` or its config mapping.
        logit_scale: multiplier of the cosine scores before the softmax.
        inference: ``short_side``, ``max_long_side``, ``mode`` (``slide``/``whole``),
            ``crop_size``, ``stride``, ``batch_size`` (windows per backbone call), ``max_pixels``
            (larger inputs are refused before decoding; None disables the cap),
            ``max_work_pixels`` (scores are computed at most at this many pixels; None: always
            at the input size) and ``score_bytes`` (memory budget of one chunk of query maps).
        postprocess: ``prob_threshold``, ``area_threshold``, ``background_index`` (``auto``: the
            class named "background", if any; an int; or None), ``pamr`` (None or
            ``{num_iter, dilations}``). The first three can be overridden per call of
            :meth:`predict`.
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
        self.backbone = BACKBONES.build_or_pass(backbone, "CLIP backbone")
        self.logit_scale = _float_setting(logit_scale, "logit_scale")
        self.inference = check_window_settings(
            merge_settings(_INFERENCE_DEFAULTS, inference, "inference"), self.backbone.patch_size
        )
        self._check_memory_settings()
        self.postprocess = merge_settings(_POSTPROCESS_DEFAULTS, postprocess, "postprocess")
        pamr = self.postprocess["pamr"]
        self.pamr = PAMR(**dict(pamr)).to(self.backbone.device) if pamr else None
        self.vocabulary = Vocabulary.create(vocabulary) if vocabulary is not None else None
        self.meta: dict[str, Any] = {}  # copied into every result (create_pipeline: the source)
        self.config: Any = None  # the resolved config this pipeline was built from, if any

    #: images whose windows share backbone batches in predict_batch / predict_stream
    encode_group = 8

    # ----------------------------------------------------------------- image side
    def _windows(self, height: int, width: int) -> list[Window]:
        if self.inference["mode"] == "whole":
            return whole_window(height, width)
        return sliding_windows(height, width, self.inference["crop_size"], self.inference["stride"])

    def load_image(self, image: Any) -> PreparedImage:
        """Decode, resize and normalise one image on the backbone's device (no model work):
        what :meth:`predict_batch` runs in worker threads. :meth:`encode` takes the result."""
        return self._prepare(image)

    def _prepare(self, image: Any) -> PreparedImage:
        """A :class:`PreparedImage`; a ``(1, 3, H, W)`` float tensor in [0, 1] is taken as it
        is, and a :class:`PreparedImage` is passed through."""
        if isinstance(image, PreparedImage):
            return image
        device = self.backbone.device
        if isinstance(image, torch.Tensor):
            if image.ndim != 4 or image.shape[:2] != (1, 3):
                raise ConfigError("Tensor images must be (1, 3, H, W) RGB floats in [0, 1].")
            array = (image[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            tensor = image.float().to(device)
        else:
            array = decode_image(image, self.inference["max_pixels"])
            tensor = to_device_pixels(array, device)
        original = (int(tensor.shape[-2]), int(tensor.shape[-1]))
        prepared, resized = prepare_image(
            tensor,
            self.inference["short_side"],
            self.inference["max_long_side"],
            self.backbone.normalize,
            min_side=self.backbone.patch_size,
        )
        return PreparedImage(array, prepared, resized, original)

    def encode(self, image: Any) -> SemanticImage:
        """Dense features of one image (path, bytes, PIL, HWC uint8 array or tensor)."""
        return self.encode_batch([image])[0]

    @torch.inference_mode()
    def encode_batch(self, images: Sequence[Any]) -> list[SemanticImage]:
        """Dense features of several images; their windows share backbone batches by size."""
        prepared = [self._prepare(image) for image in images]
        jobs: dict[tuple[int, int], list[tuple[int, int]]] = {}
        window_lists = []
        for image_index, (_, tensor, _, _) in enumerate(prepared):
            windows = self._windows(*tensor.shape[-2:])
            window_lists.append(windows)
            for window_index, window in enumerate(windows):
                jobs.setdefault(window.size, []).append((image_index, window_index))
        tokens: list[list[torch.Tensor | None]] = [[None] * len(w) for w in window_lists]
        batch_size = self.inference["batch_size"]
        for members in jobs.values():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                crops = []
                for image_index, window_index in chunk:
                    win = window_lists[image_index][window_index]
                    crops.append(prepared[image_index][1][0, :, win.y1 : win.y2, win.x1 : win.x2])
                dense = F.normalize(self.backbone.encode_dense(torch.stack(crops)), dim=1)
                for (image_index, window_index), item in zip(chunk, dense):
                    tokens[image_index][window_index] = item
        return [
            SemanticImage(
                image=array,
                original_size=original,
                resized_size=resized,
                padded_size=(int(tensor.shape[-2]), int(tensor.shape[-1])),
                windows=window_lists[i],
                features=tokens[i],
                guide=tensor[..., : resized[0], : resized[1]] if self.pamr is not None else None,
            )
            for i, (array, tensor, resized, original) in enumerate(prepared)
        ]

    # ----------------------------------------------------------------- text side
    @torch.inference_mode()
    def query_scores(
        self,
        encoded: SemanticImage,
        queries: Sequence[str] | Vocabulary,
        size: tuple[int, int] | None = None,
        cache: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Cosine scores ``(Q, *size)`` of ``queries`` (before the logit scale, after PAMR);
        ``size`` defaults to the working resolution (the input size for most images). ``cache``
        keeps what one call computes for every query chunk (PAMR's neighbour weights)."""
        if isinstance(queries, Vocabulary):
            queries = queries.queries
        size = self.working_size(encoded) if size is None else tuple(size)
        text = self.backbone.encode_text(list(queries)).to(self.backbone.device)
        window_scores = [torch.einsum("dhw,qd->qhw", t, text) for t in encoded.features]
        scores = average_window_scores(window_scores, encoded.windows, *encoded.padded_size)
        scores = scores[:, : encoded.resized_size[0], : encoded.resized_size[1]]
        scores = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)
        if self.pamr is not None:
            guide = resize_bilinear(encoded.guide, size)
            cache = {} if cache is None else cache
            key = f"pamr_weights:{size}"
            if key not in cache:
                cache[key] = self.pamr.affinity(guide.float())
            scores = self.pamr(guide, scores, weights=cache[key])
        return scores[0]

    def query_logits(
        self,
        encoded: SemanticImage,
        queries: Sequence[str],
        size: tuple[int, int],
        cache: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """``(Q, *size)`` cosine score maps x ``logit_scale``."""
        return self.query_scores(encoded, queries, size, cache) * self.logit_scale
