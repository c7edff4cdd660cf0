"""What the semantic pipelines share: a default vocabulary, image preparation, and the
``set_image`` / ``predict`` / ``__call__`` / ``predict_batch`` protocol.

A semantic pipeline subclasses :class:`SemanticPipelineBase` and provides two hooks:

* ``encode_images(images) -> list[features]``: the vocabulary-independent work per image;
* ``vocabulary_logits(features, vocab) -> (Q, H, W)``: scaled per-query logits at input size.

Its ``postprocess`` mapping holds ``prob_threshold``, ``area_threshold`` and
``background_index`` (``"auto"``: the class named "background", if any; an int; or None).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ovseg.errors import ConfigError
from ovseg.inference.postprocess import semantic_result
from ovseg.inference.resize import rescale_size, resize_bilinear
from ovseg.io import read_image
from ovseg.structures import OVSegResult
from ovseg.vocab import Vocabulary


def prepare_image(
    image: Any,
    inference: Mapping[str, Any],
    device: torch.device | str,
    normalize: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Image -> normalised, resized ``(1, 3, H', W')`` tensor and the original ``(H, W)``.

    ``image`` is anything :func:`read_image` takes, or a ``(1, 3, H, W)`` float tensor in
    [0, 1]. The resize keeps the aspect ratio: ``inference.short_side`` (None: unchanged) with
    the long side capped at ``inference.max_long_side``; ``inference.max_pixels`` caps decoding.
    """
    if isinstance(image, torch.Tensor):
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ConfigError("Tensor images must be (1, 3, H, W) RGB floats in [0, 1].")
        tensor = image.float()
    else:
        array = read_image(image, max_pixels=inference["max_pixels"])
        tensor = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0
    tensor = tensor.to(device)
    height, width = tensor.shape[-2:]
    size = rescale_size(height, width, inference["short_side"], inference["max_long_side"])
    return normalize(resize_bilinear(tensor, size)), (int(height), int(width))


class VocabularyDefault:
    """A pipeline's default vocabulary, replaced per call by a given one."""

    vocabulary: Vocabulary | None

    def set_vocabulary(self, vocabulary: Any) -> Vocabulary:
        self.vocabulary = Vocabulary.create(vocabulary)
        return self.vocabulary

    def _resolve_vocabulary(self, vocabulary: Any) -> Vocabulary:
        if vocabulary is not None:
            return Vocabulary.create(vocabulary)
        if self.vocabulary is None:
            return Vocabulary.create(None)  # raises a VocabularyError saying what to pass
        return self.vocabulary


class SemanticPipelineBase(VocabularyDefault):
    """``set_image`` / ``predict`` / ``__call__`` / ``predict_batch`` over the two hooks."""

    postprocess: Mapping[str, Any]
    meta: dict[str, Any]
    _features: Any

    def encode_images(self, images: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def vocabulary_logits(self, features: Any, vocab: Vocabulary) -> torch.Tensor:
        raise NotImplementedError

    def _background_index(self, vocab: Vocabulary) -> int | None:
        value = self.postprocess["background_index"]
        return vocab.background_index if value == "auto" else value

    @torch.inference_mode()
    def result_from_logits(self, logits: torch.Tensor, vocab: Vocabulary) -> OVSegResult:
        """Labels of ``(Q, H, W)`` scaled logits: softmax, synonyms, thresholds, background."""
        return semantic_result(
            logits,
            vocab,
            background_index=self._background_index(vocab),
            prob_threshold=float(self.postprocess["prob_threshold"]),
            area_threshold=float(self.postprocess["area_threshold"]),
            meta=self.meta,
        )

    def set_image(self, image: Any) -> Any:
        """Encode ``image`` (path, bytes, PIL, HWC uint8 array) and keep it for :meth:`predict`."""
        self._features = self.encode_images([image])[0]
        return self._features

    def predict(self, vocabulary: Any = None) -> OVSegResult:
        """Segment the image given to :meth:`set_image` with ``vocabulary`` (or the default)."""
        if self._features is None:
            raise ConfigError("No image set; call set_image(image) first (or call the pipeline).")
        vocab = self._resolve_vocabulary(vocabulary)
        return self.result_from_logits(self.vocabulary_logits(self._features, vocab), vocab)

    def __call__(self, image: Any, vocabulary: Any = None) -> OVSegResult:
        vocab = self._resolve_vocabulary(vocabulary)
        self.set_image(image)
        return self.predict(vocab)

    def predict_batch(self, images: Sequence[Any], vocabulary: Any = None) -> list[OVSegResult]:
        """Segment several images (their encoding may be batched by the pipeline)."""
        vocab = self._resolve_vocabulary(vocabulary)
        return [
            self.result_from_logits(self.vocabulary_logits(features, vocab), vocab)
            for features in self.encode_images(images)
        ]
