"""``DenseCLIPSegmenter``: semantic segmentation with a trained DenseCLIP model, any vocabulary.

Flow for one image (HWC uint8 RGB, input-image pixels), as mmseg's test pipeline of the recipes:

1. keep-ratio resize so the short side is ``inference.short_side`` (long side capped at
   ``max_long_side``), bilinear, then normalise with the model's statistics;
2. cut sliding windows (``crop_size`` / ``stride``) or take the whole image and run the image
   backbone on them (``batch_size`` windows at a time) - cached by :meth:`set_image`;
3. per vocabulary: every query (class name or synonym) is prompted with the learned contexts,
   the context decoder and decode head run on the cached features, window logits are upsampled
   to their windows and averaged where they overlap, then upsampled to the working resolution
   (the input size unless it exceeds ``inference.max_work_pixels``);
4. softmax over queries, max over each class's synonyms, optional area / probability
   thresholds, argmax, labels at the input size (:mod:`ovseg.inference.labels`). The context
   decoder relates the queries to each other, so they are always scored together.

Because the context decoder lets the vocabulary attend to the image, only step 2 is shared
between vocabularies. Weights come from ``task.export`` of the ``DenseCLIP`` training task (a
safetensors file holding the architecture in its metadata), loaded through :mod:`ovseg.weights`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError, WeightsNotFoundError
from ovseg.inference.resize import prepare_image
from ovseg.inference.sliding import average_window_scores, check_window_settings, windows_for
from ovseg.models.denseclip import DenseCLIPSegmentor
from ovseg.models.denseclip_export import build_from_export
from ovseg.pipelines.base import (
    MEMORY_DEFAULTS,
    SEMANTIC_POSTPROCESS_DEFAULTS,
    DenseSemanticPipeline,
    SemanticImage,
    decode_image,
)
from ovseg.registry import PIPELINES
from ovseg.settings import merge_settings
from ovseg.vocab import Vocabulary

_INFERENCE_DEFAULTS = {
    "short_side": 512,
    "max_long_side": 2048,
    "mode": "slide",
    "crop_size": 512,
    "stride": 341,
    "batch_size": 8,
    **MEMORY_DEFAULTS,
}
_POSTPROCESS_DEFAULTS = dict(SEMANTIC_POSTPROCESS_DEFAULTS)


def embedded_denseclip_weights(model: Mapping[str, Any] | None, tag: str) -> str:
    """The packaged weights of a DenseCLIP head on ``model["model_name"]`` under ``tag``.

    Packaged exports are stored without architecture metadata (so their bytes are reproducible),
    so ``model`` must spell the architecture out, as the packaged presets do.
    """
    from ovseg.model_zoo.embedded import EMBEDDED_WEIGHTS, embedded_checkpoint

    name = (model or {}).get("model_name")
    if not name:
        raise ConfigError(
            "pipeline.pretrained names packaged DenseCLIP weights; also give pipeline.model with "
            "the architecture (model_name, num_contexts, decoder, neck, neck_args)."
        )
    key = f"denseclip-{name}"
    path = embedded_checkpoint(key, tag)
    if path is None:
        known = sorted(
            f"{m[len('denseclip-') :]} / {t}"
            for m, t in EMBEDDED_WEIGHTS
            if m.startswith("denseclip-")
        )
        raise WeightsNotFoundError(
            f"No packaged DenseCLIP weights for {name} / {tag} (packaged: {', '.join(known)}); "
            "train a DenseCLIP config and pass pipeline.weights=WORK_DIR/model_final.safetensors."
        )
    return str(path)


@PIPELINES.register()
class DenseCLIPSegmenter(DenseSemanticPipeline):
    """Trained DenseCLIP segmentation for any vocabulary.

    Args:
        weights: the exported model (``model_final.safetensors`` of a ``DenseCLIP`` training
            run). Required unless ``pretrained`` names packaged weights: the context decoder and
            decode head are learned.
        model: :class:`~ovseg.models.denseclip.DenseCLIPSegmentor` keyword arguments; None
            reads the architecture stored in ``weights``.
        pretrained: tag of packaged weights for ``model["model_name"]`` (e.g. ``shapes``).
        release: the authors' released ADE20K checkpoint (``res50``, ``res101``, ``vit-b``;
            :mod:`ovseg.models.denseclip_release`): the closed-set architecture of that config,
            weights from ``weights`` or, by default, the release's file in torch hub's
            checkpoint folder. It scores exactly the 150 ADE20K names it was trained with.
        device: where the model runs.
        backbone: accepted so ``create_pipeline(device=...)`` works; only its ``device`` key is
            read.
        inference: ``short_side``, ``max_long_side``, ``mode`` (``slide`` / ``whole``),
            ``crop_size``, ``stride``, ``batch_size`` (windows per forward), ``max_pixels``.
        postprocess: ``prob_threshold``, ``area_threshold``, ``background_index`` (as
            :class:`~ovseg.pipelines.semantic.SemanticSegmenter`).
        vocabulary: default vocabulary (see :meth:`Vocabulary.create`).
    """

    chunkable_queries = False

    def __init__(
        self,
        weights: str | None = None,
        model: Mapping[str, Any] | None = None,
        pretrained: str | None = None,
        release: str | None = None,
        device: str = "cpu",
        backbone: Mapping[str, Any] | None = None,
        inference: Mapping[str, Any] | None = None,
        postprocess: Mapping[str, Any] | None = None,
        vocabulary: Any = None,
    ) -> None:
        if backbone:
            extra = sorted(set(backbone) - {"device"})
            if extra:
                raise ConfigError(
                    f"DenseCLIPSegmenter reads only backbone.device, not {extra}; put the "
                    "architecture under pipeline.model."
                )
            device = backbone.get("device", device) or device
        if release:
            from ovseg.models.denseclip_release import build_from_release

            built = build_from_release(release, weights or None, model)
        else:
            if not weights and pretrained:
                weights = embedded_denseclip_weights(model, pretrained)
            if not weights:
                raise WeightsNotFoundError(
                    "DenseCLIPSegmenter needs trained weights: train a DenseCLIP config (e.g. "
                    "`ovseg train configs/shapes/shapes_tiny_denseclip.yaml`) and pass "
                    "pipeline.weights=WORK_DIR/model_final.safetensors, or use the authors' "
                    "released checkpoints with pipeline.release=res50|res101|vit-b."
                )
            built = build_from_export(weights, model)
        self.model: DenseCLIPSegmentor = built.to(device).eval()
        self.inference = check_window_settings(
            merge_settings(_INFERENCE_DEFAULTS, inference, "inference"), 1
        )
        self._check_memory_settings()
        self.postprocess = merge_settings(_POSTPROCESS_DEFAULTS, postprocess, "postprocess")
        self.vocabulary = Vocabulary.create(vocabulary) if vocabulary is not None else None
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self.meta: dict[str, Any] = {}
        self.config: Any = None

    @property
    def device(self) -> torch.device:
        return self.model.pixel_mean.device

    # ----------------------------------------------------------------- vocabulary
    @torch.inference_mode()
    def encode_queries(self, queries: Sequence[str]) -> torch.Tensor:
        """Prompted embeddings ``(Q, D)`` of the queries (cached per query list)."""
        key = tuple(queries)
        if key not in self._text_cache:
            self._text_cache[key] = self.model.encode_names(list(queries))
        return self._text_cache[key]

    # ----------------------------------------------------------------- image side
    def encode(self, image: Any) -> SemanticImage:
        """Backbone features of the windows of one image (path, bytes, PIL, HWC uint8 array)."""
        return self.encode_batch([image])[0]

    @torch.inference_mode()
    def encode_batch(self, images: Sequence[Any]) -> list[SemanticImage]:
        """Backbone features of each image's windows (``batch_size`` windows per forward);
        ``features[i]`` is the :class:`PyramidOutput` of the window batch ``windows[i]``."""
        encoded = []
        batch_size = self.inference["batch_size"]
        for image in images:
            array = decode_image(image, self.inference["max_pixels"])
            pixels = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0
            tensor, resized = prepare_image(
                pixels.to(self.device),
                self.inference["short_side"],
                self.inference["max_long_side"],
                self.model.normalize,
                min_side=32,
            )
            windows = windows_for(
                *tensor.shape[-2:],
                self.inference["mode"],
                self.inference["crop_size"],
                self.inference["stride"],
            )
            groups = [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]
            chunks = [
                self.model.encode_image(
                    torch.cat([tensor[:, :, w.y1 : w.y2, w.x1 : w.x2] for w in group])
                )
                for group in groups
            ]
            encoded.append(
                SemanticImage(
                    image=array,
                    original_size=(int(array.shape[0]), int(array.shape[1])),
                    resized_size=resized,
                    padded_size=(int(tensor.shape[-2]), int(tensor.shape[-1])),
                    windows=groups,
                    features=chunks,
                )
            )
        return encoded

    # ----------------------------------------------------------------- vocabulary side
    @torch.inference_mode()
    def query_logits(
        self,
        encoded: SemanticImage,
        queries: Sequence[str],
        size: tuple[int, int],
        cache: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Decode-head logits ``(Q, *size)`` of the queries, at ``size`` (the working size)."""
        text = self.encode_queries(queries)
        scores, windows = [], []
        for group, pyramid in zip(encoded.windows, encoded.features):
            scores.extend(self.model.decode(pyramid, text).logits.float())
            windows.extend(group)
        logits = average_window_scores(scores, windows, *encoded.padded_size)
        logits = logits[:, : encoded.resized_size[0], : encoded.resized_size[1]]
        return F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
