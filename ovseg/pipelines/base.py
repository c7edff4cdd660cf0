"""The shape every task pipeline shares: encode an image once, prompt it many times.

* ``pipeline.encode(image) -> EncodedImage``: the vocabulary- and prompt-independent work on
  one image (decoding, resizing, image encoders), returned as a value. Subclasses add what their
  task needs (CLIP tokens, SAM embeddings); caches that only some prompts need (SAM proposals,
  whole-image CLIP tokens) are filled on first use through :meth:`EncodedImage.cached`.
* ``pipeline.predict(encoded, query=None, **overrides) -> result``: one prompt (vocabulary,
  phrase, clicks) on an encoded image. ``overrides`` replace per-call settings (score
  threshold, probability threshold ...); the pipeline itself is never changed by a call.
* ``pipeline(image, query=None, **overrides)`` = ``predict(encode(image), query, ...)``;
  ``set_image(image)`` + ``predict(query)`` keep the last encoded image, for interactive use.

Images are decoded in one place, :func:`decode_image`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ovseg.errors import ConfigError, PromptError
from ovseg.inference.dense import whole_image_tokens
from ovseg.inference.labels import (
    DEFAULT_MAX_WORK_PIXELS,
    DEFAULT_SCORE_BYTES,
    query_chunk_size,
    stream_semantic_result,
    working_size,
)
from ovseg.inference.streaming import prefetch
from ovseg.io import DEFAULT_MAX_PIXELS, read_image
from ovseg.settings import merge_settings
from ovseg.structures import OVSegResult
from ovseg.vocab import Vocabulary

__all__ = [
    "DenseSemanticPipeline",
    "EncodedImage",
    "Pipeline",
    "PromptablePipeline",
    "SamClipImage",
    "SamClipPipeline",
    "SemanticImage",
    "VocabularyDefault",
    "decode_image",
    "decode_like",
    "resolve_clicks",
]


def decode_image(image: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Anything :func:`ovseg.io.read_image` takes (path, bytes, PIL, array) or an
    :class:`EncodedImage` -> ``(H, W, 3)`` uint8 RGB, under the pixel cap ``max_pixels``."""
    if isinstance(image, EncodedImage):
        return image.image
    return read_image(image, max_pixels=max_pixels)


def decode_like(pipeline: Any, image: Any) -> np.ndarray:
    """:func:`decode_image` under ``pipeline``'s ``inference.max_pixels`` when it sets one (a
    pipeline that wraps another decodes as the wrapped one would)."""
    settings = getattr(pipeline, "inference", None) or {}
    if "max_pixels" in settings:
        return decode_image(image, settings["max_pixels"])
    return decode_image(image)


def resolve_clicks(
    pipeline: Any, encoded: Any, points: Any, vocabulary: Any
) -> tuple[Any, Any, Any]:
    """The ``(encoded, points, vocabulary)`` of a ``segment_clicks`` call, which takes
    ``(encoded, points, vocabulary)`` or ``(points, vocabulary=...)`` on the image kept by
    ``pipeline.set_image``.

    Raises:
        PromptError: no image was set, or no click was given.
    """
    if not isinstance(encoded, pipeline.encoded_type):
        if points is not None and vocabulary is None:
            vocabulary = points
        encoded, points = pipeline._current, encoded
        if encoded is None:
            raise PromptError("No image; pass encode(image) or call set_image(image) first.")
    if points is None or len(points) == 0:
        raise PromptError("Give at least one click (PointPrompts with one point or more).")
    return encoded, points, vocabulary


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """One image as a pipeline encoded it (a value: pass it to ``predict`` any number of times).

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, the decoded input (input-image pixels are its pixels).
    """

    image: np.ndarray
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the input image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key for this image (e.g. SAM proposals); thread-safe."""
        with self._lock:
            if key not in self._cache:
                self._cache[key] = compute()
            return self._cache[key]


@runtime_checkable
class Pipeline(Protocol):
    """What every task pipeline offers (see the module docstring)."""

    meta: dict[str, Any]
    config: Any

    def encode(self, image: Any) -> EncodedImage: ...

    def predict(self, encoded: Any = None, query: Any = None, **overrides: Any) -> Any: ...

    def __call__(self, image: Any, query: Any = None, **overrides: Any) -> Any: ...


class PromptablePipeline:
    """``predict`` / ``__call__`` / ``set_image`` over two methods a task provides:

    * ``encode(image) -> EncodedImage``;
    * ``_predict(encoded, query, settings) -> result``, where ``settings`` are the pipeline's
      per-call settings (:attr:`call_settings`) merged with the call's overrides.
    """

    meta: dict[str, Any]
    config: Any
    _current: EncodedImage | None = None
    #: the encoded value type of this pipeline (checked by ``predict``)
    encoded_type: type[EncodedImage] = EncodedImage
    #: the keyword name of the query (``predict(vocabulary=...)``, ``predict(phrase=...)``)
    query_name: str = "vocabulary"

    @property
    def call_settings(self) -> Mapping[str, Any]:
        """Settings a call may override (``predict(..., name=value)``)."""
        return {}

    def encode(self, image: Any) -> EncodedImage:
        raise NotImplementedError

    def _predict(self, encoded: Any, query: Any, settings: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def settings_for(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """:attr:`call_settings` with ``overrides``; unknown names raise :class:`ConfigError`."""
        return merge_settings(self.call_settings, overrides, f"{type(self).__name__}.predict")

    def set_image(self, image: Any) -> EncodedImage:
        """Encode ``image`` and keep it for :meth:`predict` calls without an encoded image."""
        self._current = self.encode(image)
        return self._current

    def predict(self, encoded: Any = None, query: Any = None, **overrides: Any) -> Any:
        """``predict(encoded, query, **overrides)``, or ``predict(query)`` after :meth:`set_image`."""
        if self.query_name in overrides:
            if query is not None:
                raise ConfigError(f"{self.query_name} given twice.")
            query = overrides.pop(self.query_name)
        if not isinstance(encoded, EncodedImage):
            if query is not None:
                raise ConfigError(
                    f"predict takes (encoded, query); got {type(encoded).__name__} as the encoded "
                    "image. Pass pipeline.encode(image), or call pipeline(image, query)."
                )
            query, encoded = encoded, self._current
            if encoded is None:
                raise ConfigError(
                    "No image set; call set_image(image) first, pass encode(image), or call the "
                    "pipeline."
                )
        if not isinstance(encoded, self.encoded_type):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.encoded_type.__name__} (from its own "
                f"encode()), got a {type(encoded).__name__}."
            )
        return self._predict(encoded, query, self.settings_for(overrides))

    def __call__(self, image: Any, query: Any = None, **overrides: Any) -> Any:
        if self.query_name in overrides and query is None:
            query = overrides.pop(self.query_name)
        encoded = self.set_image(image)
        return self.predict(encoded, query, **overrides)

    #: images encoded together by :meth:`predict_stream` (pipelines that batch work across
    #: images, such as the windows of the semantic pipeline, gain from more than one)
    encode_group: int = 1

    def load_image(self, image: Any) -> Any:
        """The per-image work that needs no model: decoding (and, where a pipeline overrides
        it, resizing and moving to the device). Runs in worker threads during
        :meth:`predict_batch`; :meth:`encode` accepts what it returns."""
        settings = getattr(self, "inference", None) or {}
        return decode_image(image, settings.get("max_pixels", DEFAULT_MAX_PIXELS))

    def predict_stream(
        self,
        images: Iterable[Any],
        query: Any = None,
        *,
        workers: int = 2,
        prefetch_depth: int = 4,
        **overrides: Any,
    ) -> Iterator[Any]:
        """One result per image, in order, as they are ready.

        :meth:`load_image` of the next images runs in ``workers`` threads (at most
        ``prefetch_depth`` ahead) while the model runs here; ``encode_group`` loaded images
        are encoded together. ``workers=0`` loads in this thread. A bad image raises its
        error (:class:`ovseg.errors.ImageReadError` ...) when its turn comes.
        """
        group: list[Any] = []
        for loaded in prefetch(
            self.load_image, images, workers=workers, depth=max(prefetch_depth, 1)
        ):
            group.append(loaded.get())
            if len(group) >= max(1, self.encode_group):
                for encoded in self.encode_batch(group):
                    yield self.predict(encoded, query, **overrides)
                group = []
        if group:
            for encoded in self.encode_batch(group):
                yield self.predict(encoded, query, **overrides)

    def predict_batch(
        self,
        images: Sequence[Any],
        query: Any = None,
        *,
        workers: int = 2,
        prefetch_depth: int = 4,
        **overrides: Any,
    ) -> list[Any]:
        """One result per image (:meth:`predict_stream`: images load in worker threads while
        the model runs; pipelines may batch the encoding)."""
        return list(
            self.predict_stream(
                images, query, workers=workers, prefetch_depth=prefetch_depth, **overrides
            )
        )

    def encode_batch(self, images: Sequence[Any]) -> list[EncodedImage]:
        """:meth:`encode` of several images (pipelines may batch the work)."""
        return [self.encode(image) for image in images]


class VocabularyDefault:
    """A pipeline's default vocabulary, replaced per call by a given one."""

    vocabulary: Vocabulary | None

    def set_vocabulary(self, vocabulary: Any) -> Vocabulary:
        self.vocabulary = Vocabulary.create(vocabulary)
        return self.vocabulary

    def resolve_vocabulary(self, vocabulary: Any) -> Vocabulary:
        """``vocabulary`` as a :class:`Vocabulary`, or the default one when it is None."""
        if vocabulary is not None:
            return Vocabulary.create(vocabulary)
        if self.vocabulary is None:
            return Vocabulary.create(None)  # raises a VocabularyError saying what to pass
        return self.vocabulary


# --------------------------------------------------------------------------------------------
# Dense semantic pipelines (training-free dense CLIP, DenseCLIP)
# --------------------------------------------------------------------------------------------
SEMANTIC_POSTPROCESS_DEFAULTS: dict[str, Any] = {
    "prob_threshold": 0.0,
    "area_threshold": 0.0,
    "background_index": "auto",
}
#: memory bounds shared by the dense semantic pipelines (see ``ovseg.inference.labels``)
MEMORY_DEFAULTS: dict[str, Any] = {
    "max_pixels": DEFAULT_MAX_PIXELS,
    "max_work_pixels": DEFAULT_MAX_WORK_PIXELS,
    "score_bytes": DEFAULT_SCORE_BYTES,
}


def _optional_positive_int(settings: dict[str, Any], key: str) -> None:
    value = settings.get(key)
    if value is None:
        return
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1 or number != float(value):
        raise ConfigError(f"inference.{key} must be a positive integer or null, got {value!r}.")
    settings[key] = number


@dataclass(frozen=True, eq=False)
class SemanticImage(EncodedImage):
    """A dense semantic pipeline's encoded image.

    Attributes:
        original_size: ``(H, W)`` of the input image.
        resized_size: ``(H', W')`` the image was resized to (the windows' frame); the tensors
            may cover a zero-padded ``padded_size`` around it when a side was under the minimum.
        padded_size: ``(H'', W'')`` >= ``resized_size``, the frame the windows tile.
        windows: the windows of the resized image (``ovseg.inference.sliding.Window``).
        features: what the pipeline computed per window (dense tokens, feature pyramids).
        guide: the normalised resized image ``(1, 3, H', W')`` for PAMR, or None.
    """

    original_size: tuple[int, int] = (0, 0)
    resized_size: tuple[int, int] = (0, 0)
    padded_size: tuple[int, int] = (0, 0)
    windows: list = field(default_factory=list)
    features: list = field(default_factory=list)
    guide: Any = None


class DenseSemanticPipeline(PromptablePipeline, VocabularyDefault):
    """Semantic segmentation over per-window dense features (shared by the dense pipelines).

    Subclasses implement :meth:`encode` (returning a :class:`SemanticImage`) and
    :meth:`query_logits`; this class turns those logits into labels with bounded memory
    (:mod:`ovseg.inference.labels`): scores at the working resolution, queries in chunks when
    their maps would exceed ``inference.score_bytes``.
    """

    encoded_type = SemanticImage
    postprocess: dict[str, Any]
    inference: dict[str, Any]
    chunkable_queries = True  # False where every query depends on the others (DenseCLIP)

    def _check_memory_settings(self) -> None:
        for key in ("max_pixels", "max_work_pixels", "score_bytes"):
            _optional_positive_int(self.inference, key)

    @property
    def call_settings(self) -> Mapping[str, Any]:
        return {key: self.postprocess[key] for key in SEMANTIC_POSTPROCESS_DEFAULTS}

    def query_logits(
        self,
        encoded: SemanticImage,
        queries: Sequence[str],
        size: tuple[int, int],
        cache: dict[str, Any] | None = None,
    ) -> Any:
        """Scaled logits ``(len(queries), *size)`` of ``queries`` (cosine x logit scale, after
        any refinement), resized to ``size`` (the working resolution). ``cache`` is one dict
        per prediction, shared by its query chunks."""
        raise NotImplementedError

    def working_size(self, encoded: SemanticImage) -> tuple[int, int]:
        return working_size(*encoded.original_size, self.inference["max_work_pixels"])

    def _predict(
        self, encoded: SemanticImage, vocabulary: Any, settings: Mapping[str, Any]
    ) -> OVSegResult:
        vocab = self.resolve_vocabulary(vocabulary)
        queries = vocab.queries
        work = self.working_size(encoded)
        chunk = (
            query_chunk_size(len(queries), work, self.inference["score_bytes"])
            if self.chunkable_queries
            else len(queries)
        )
        background = settings["background_index"]
        if background == "auto":
            background = vocab.background_index
        cache: dict[str, Any] = {}
        return stream_semantic_result(
            lambda start, stop: self.query_logits(encoded, queries[start:stop], work, cache),
            vocab,
            work,
            encoded.original_size,
            chunk=chunk,
            background_index=background,
            prob_threshold=float(settings["prob_threshold"]),
            area_threshold=float(settings["area_threshold"]),
            meta=self.meta,
        )


# --------------------------------------------------------------------------------------------
# SAM-based pipelines (referring, instance): SAM embedding now, CLIP tokens on demand
# --------------------------------------------------------------------------------------------
DENSE_TOKEN_DEFAULTS: dict[str, Any] = {
    "short_side": 336,
    "max_long_side": 672,
    "batch_size": 1,
    "max_pixels": DEFAULT_MAX_PIXELS,
}


@dataclass(frozen=True, eq=False)
class SamClipImage(EncodedImage):
    """An image embedded for SAM; its whole-image CLIP tokens are computed on first use.

    Attributes:
        embedding: SAM's image embedding (``ovseg.models.decoders.sam.ImageEmbedding``).
    """

    embedding: Any = None


class SamClipPipeline(PromptablePipeline):
    """Encoding shared by the SAM + CLIP pipelines: ``decoder`` (SAM), ``backbone`` (CLIP or
    None) and ``inference`` (:data:`DENSE_TOKEN_DEFAULTS` keys)."""

    encoded_type = SamClipImage
    decoder: Any
    backbone: Any
    inference: dict[str, Any]

    def encode(self, image: Any) -> SamClipImage:
        """Decode ``image`` (path, bytes, PIL, HWC uint8 array) and embed it for SAM."""
        return self.encode_batch([image])[0]

    @property
    def encode_group(self) -> int:  # type: ignore[override]
        """Images per SAM image-encoder call in :meth:`predict_stream`."""
        return int(getattr(self.decoder, "image_batch_size", 1))

    def encode_batch(self, images: Sequence[Any]) -> list[SamClipImage]:
        """Decode and embed several images, the SAM image encoder batching them
        (``decoder.image_batch_size`` per call)."""
        arrays = [decode_image(image, self.inference["max_pixels"]) for image in images]
        embeddings = self.decoder.embed_batch(arrays)
        return [
            SamClipImage(image=array, embedding=embedding)
            for array, embedding in zip(arrays, embeddings, strict=True)
        ]

    def dense_tokens(self, encoded: SamClipImage) -> Any:
        """``(D, h, w)`` L2-normalised CLIP tokens of the whole image (computed once per image)."""
        if self.backbone is None:
            raise ConfigError(
                "This pipeline has no CLIP backbone; give backbone={...} to segment by phrase, "
                "or use predict_from_embedding with your own tokens."
            )
        short, long = self.inference["short_side"], self.inference["max_long_side"]
        return encoded.cached(
            f"clip_tokens:{id(self.backbone)}:{short}:{long}",
            lambda: whole_image_tokens(self.backbone, encoded.image, short, long),
        )
