"""Labels from per-query score maps with bounded memory: a working resolution, query chunks.

A semantic pipeline scores every query (class name or synonym) at every pixel. Holding those
maps at the input image's size costs ``Q * H * W * 4`` bytes per copy, which a 12-48 MP photo
or a vocabulary of hundreds of names cannot afford. Two bounds keep it small:

* **working resolution**: scores, PAMR and the softmax run at the input size when it has at most
  ``max_work_pixels`` pixels, else at the largest keep-ratio size under that cap
  (:func:`working_size`); labels are then taken at the input size by nearest-neighbour lookup.
* **query chunks**: when ``Q * work pixels * 4`` bytes exceed ``score_bytes``, queries are
  scored ``chunk`` at a time and the softmax is streamed (running max, argmax and sum of
  exponentials per pixel), so no ``(Q, h, w)`` map exists. Synonyms, the area threshold and the
  probability threshold give the same labels as :func:`~ovseg.inference.postprocess.semantic_result`
  up to floating-point ties.

When neither bound applies (the usual image and vocabulary), :func:`semantic_result` runs on the
whole ``(Q, H, W)`` map exactly as before, so results are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ovseg.errors import ConfigError
from ovseg.inference.postprocess import semantic_result
from ovseg.structures import UNLABELLED, OVSegResult

if TYPE_CHECKING:
    from ovseg.vocab import Vocabulary

__all__ = ["nearest_resize", "query_chunk_size", "stream_semantic_result", "working_size"]

#: Default cap of the working resolution: 2048 x 2048 pixels (every standard benchmark image
#: fits, so the published settings run at the input size as their reference code does).
DEFAULT_MAX_WORK_PIXELS = 2048 * 2048
#: Default budget of one chunk of query score maps, in bytes.
DEFAULT_SCORE_BYTES = 64 * 2**20

ScoreFn = Callable[[int, int], Tensor]


def working_size(height: int, width: int, max_pixels: int | None) -> tuple[int, int]:
    """The size scores are computed at: ``(height, width)`` if it has at most ``max_pixels``
    pixels (or no cap), else the keep-ratio size ``(h, w)`` with ``h * w <= max_pixels``."""
    if max_pixels is None or height * width <= max_pixels:
        return int(height), int(width)
    factor = math.sqrt(max_pixels / (height * width))
    return max(1, int(height * factor)), max(1, int(width * factor))


def query_chunk_size(num_queries: int, size: tuple[int, int], score_bytes: int | None) -> int:
    """How many queries' ``float32`` maps of ``size`` fit ``score_bytes`` (at least 1, at most
    ``num_queries``; all of them when there is no budget)."""
    if score_bytes is None:
        return max(1, num_queries)
    per_query = 4 * size[0] * size[1]
    return max(1, min(num_queries, score_bytes // max(per_query, 1)))


def nearest_resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(h, w, ...)`` array -> ``(H, W, ...)`` by nearest-neighbour lookup (pixel centres:
    source row ``floor((i + 0.5) * h / H)``); returns ``values`` itself when the size matches."""
    height, width = values.shape[:2]
    if (height, width) == tuple(size):
        return values
    rows = np.minimum(((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64), width - 1)
    return values[rows[:, None], cols[None, :]]


def _streamed_maxima(
    score_fn: ScoreFn, num_queries: int, chunk: int, excluded: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per pixel: the max logit, the first query reaching it, and (without ``excluded``) the
    log of the softmax denominator over all queries."""
    best = index = log_sum = None
    for start in range(0, num_queries, chunk):
        stop = min(start + chunk, num_queries)
        logits = score_fn(start, stop).float()
        if excluded is None:
            chunk_max = logits.amax(0)
            chunk_sum = torch.exp(logits - chunk_max).sum(0)
            if log_sum is None:
                log_sum = chunk_max + torch.log(chunk_sum)
            else:
                log_sum = torch.logaddexp(log_sum, chunk_max + torch.log(chunk_sum))
        else:
            logits = logits.masked_fill(excluded[start:stop, None, None], float("-inf"))
        chunk_best, chunk_index = logits.max(0)
        chunk_index = chunk_index + start
        if best is None:
            best, index = chunk_best, chunk_index
        else:
            better = chunk_best > best  # strict: the first query keeps a tie, as argmax does
            best = torch.where(better, chunk_best, best)
            index = torch.where(better, chunk_index, index)
        del logits
    assert best is not None and index is not None
    return best, index, log_sum


def _streamed_class_max(score_fn: ScoreFn, num_queries: int, chunk: int, queries: Tensor) -> Tensor:
    """Per pixel: the max logit over the given query indices (``-inf`` when there is none)."""
    best = None
    for start in range(0, num_queries, chunk):
        stop = min(start + chunk, num_queries)
        wanted = queries[(queries >= start) & (queries < stop)] - start
        if not len(wanted):
            continue
        chunk_best = score_fn(start, stop).float()[wanted].amax(0)
        best = chunk_best if best is None else torch.maximum(best, chunk_best)
    if best is None:
        raise ValueError("no query given")
    return best


def stream_semantic_result(
    score_fn: ScoreFn,
    vocab: Vocabulary,
    work_size: tuple[int, int],
    image_size: tuple[int, int],
    *,
    chunk: int,
    background_index: int | None,
    prob_threshold: float,
    area_threshold: float,
    meta: dict[str, Any] | None = None,
) -> OVSegResult:
    """An :class:`OVSegResult` at ``image_size`` from scaled logits computed at ``work_size``.

    Args:
        score_fn: ``(start, stop) -> (stop - start, h, w)`` scaled logits of those queries at
            ``work_size`` (cosine x logit scale, after PAMR).
        vocab: the vocabulary (its ``query_to_class`` maps queries to classes).
        work_size: ``(h, w)`` the logits are computed at.
        image_size: ``(H, W)`` of the input image; labels are looked up from ``work_size`` by
            nearest neighbour when the two differ.
        chunk: queries scored per call of ``score_fn``; with ``chunk >= Q`` the whole map is
            computed once and :func:`semantic_result` takes the labels (the exact path).
        background_index, prob_threshold, area_threshold, meta: as :func:`semantic_result`.

    Returns:
        The result with ``sem_seg`` ``(H, W)``, ``label_scores`` ``(H, W)`` (probability of each
        pixel's label) and ``probs`` ``(C, h, w)`` at the working size on the exact path (None
        when the queries were chunked).
    """
    num_queries = len(vocab.queries)
    num_classes = len(vocab)
    meta = dict(meta or {})
    if tuple(work_size) != tuple(image_size):
        meta["working_size"] = [int(v) for v in work_size]
    if chunk >= num_queries:
        result = semantic_result(
            score_fn(0, num_queries),
            vocab,
            background_index=background_index,
            prob_threshold=prob_threshold,
            area_threshold=area_threshold,
            meta=meta,
        )
        return _at_image_size(result, image_size)
    for name, value in (("prob_threshold", prob_threshold), ("area_threshold", area_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(
                f"{name} must lie in [0, 1], got {value}; fix the preset or override."
            )
    best, index, log_sum = _streamed_maxima(score_fn, num_queries, chunk, None)
    assert log_sum is not None
    query_class = vocab.query_to_class.long().to(index.device)  # labels stay on the device
    labels = query_class[index]
    if area_threshold > 0:
        counts = torch.bincount(labels.flatten(), minlength=num_classes).double()
        candidates = torch.ones(num_classes, dtype=torch.bool, device=counts.device)
        if background_index is not None:
            candidates[background_index] = False
        total = counts[candidates].sum()
        suppressed = ~((counts > area_threshold * total) | ~candidates)
        if bool(suppressed.any()):
            excluded = suppressed[query_class]
            if bool(excluded.all()):
                best = torch.full_like(best, float("-inf"))
            else:
                best, index, _ = _streamed_maxima(score_fn, num_queries, chunk, excluded)
                labels = query_class[index]
    top_prob = torch.exp(best - log_sum)
    label_prob = top_prob
    if prob_threshold > 0:
        low = top_prob < prob_threshold
        if background_index is not None:
            background_queries = torch.nonzero(query_class == background_index).flatten()
            background_prob = torch.exp(
                _streamed_class_max(score_fn, num_queries, chunk, background_queries) - log_sum
            )
            labels = torch.where(low, background_index, labels)
            label_prob = torch.where(low, background_prob, top_prob)
        else:
            labels = torch.where(low, UNLABELLED, labels)
    result = OVSegResult(
        sem_seg=labels.cpu().numpy().astype(np.int64),
        class_names=vocab.names,
        probs=None,
        label_scores=label_prob.cpu().numpy().astype(np.float32),
        meta={**meta, "query_chunks": math.ceil(num_queries / chunk)},
    )
    return _at_image_size(result, image_size)


def _at_image_size(result: OVSegResult, image_size: tuple[int, int]) -> OVSegResult:
    """``result`` with ``sem_seg`` and ``label_scores`` looked up at ``image_size``."""
    if result.label_scores is None and result.probs is not None:
        labels = result.sem_seg
        valid = labels != UNLABELLED
        scores = np.zeros(labels.shape, dtype=np.float32)
        rows, cols = np.nonzero(valid)
        scores[rows, cols] = result.probs[labels[rows, cols], rows, cols]
        result.label_scores = scores
    if tuple(result.sem_seg.shape) != tuple(image_size):
        result.sem_seg = nearest_resize(result.sem_seg, image_size)
        result.label_scores = nearest_resize(result.label_scores, image_size)
    return result
