"""The open-vocabulary detector interface: images + text queries -> scored boxes.

Every detector offers ``detect(images, queries, box_threshold=, score_threshold=, nms=)``:

* ``images``: one image (HWC uint8 RGB array, path, PIL image, or an ``EncodedImage``: its
  ``image``) or a list of them (batched through the model ``batch_size`` at a time);
* ``queries``: a list of phrases, or a :class:`~ovseg.vocab.Vocabulary` (its synonyms are
  queries of one class); any number of them: when they do not fit one model call (the text
  length of Grounding DINO's or MDETR's caption, ``max_queries_per_call`` for OWL) they are
  split over several calls. A single query longer than the model's text length is refused (never cut).

A subclass supplies :meth:`OpenVocabularyDetector.score_chunk`: for a batch of images and a
chunk of queries, per image the candidate boxes ``(P, 4)`` (XYXY float, input-image pixels) and
their per-query logits ``(P, Q_chunk)`` (score = ``sigmoid(logit)``; the best query is taken
on the logits, as transformers does, so saturated probabilities do not tie). This class then
applies, per image:

1. ``box_threshold``: a candidate is kept when its best query score is strictly greater
   (transformers' ``threshold``);
2. labelling: with ``score_threshold=None`` the best query only (as transformers'
   post-processing); else every query whose score is strictly greater than ``score_threshold``
   (one detection per box and query);
3. NMS (``nms`` = IoU threshold, or None): greedy, within each class, where the queries of one
   class (synonyms) count as one class;
4. order by score (descending, stable) and ``max_detections``.

Boxes are clipped to the image when ``clip_boxes`` is set (the default); transformers'
post-processing leaves them unclipped (``clip_boxes=False`` reproduces it exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ovseg.errors import ConfigError, VocabularyError
from ovseg.io import read_image
from ovseg.models.classifiers.nms import class_wise_nms
from ovseg.structures import Detections  # the result type, re-exported here
from ovseg.vocab import Vocabulary

__all__ = ["Detections", "OpenVocabularyDetector", "QuerySet", "as_query_set", "ranked_detections"]


@dataclass(frozen=True)
class QuerySet:
    """Queries with the class of each (synonyms share a class) and the class names."""

    queries: tuple[str, ...]
    query_to_class: tuple[int, ...]
    class_names: tuple[str, ...]


def as_query_set(queries: Any) -> QuerySet:
    """A list of phrases (one class each) or a :class:`Vocabulary` as a :class:`QuerySet`.

    Raises:
        VocabularyError: no query, or an empty / non-string query.
    """
    if isinstance(queries, Vocabulary):
        return QuerySet(
            tuple(queries.queries),
            tuple(int(c) for c in queries.query_to_class.tolist()),
            tuple(queries.names),
        )
    if isinstance(queries, str) or not isinstance(queries, Sequence):
        raise VocabularyError(
            f"queries must be a list of phrases or a Vocabulary, got {type(queries).__name__}; "
            "e.g. detect(image, ['a cat', 'a remote control'])."
        )
    cleaned = []
    for query in queries:
        if not isinstance(query, str) or not query.strip():
            raise VocabularyError(f"Every query must be a non-empty phrase; got {query!r}.")
        cleaned.append(query.strip())
    if not cleaned:
        raise VocabularyError("No query given; pass at least one phrase to detect.")
    return QuerySet(tuple(cleaned), tuple(range(len(cleaned))), tuple(cleaned))


def _as_image(image: Any) -> np.ndarray:
    inner = getattr(image, "image", None)
    if isinstance(inner, np.ndarray):
        return inner
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3:
        if image.shape[2] != 3:
            raise ConfigError(f"Images must be (H, W, 3) RGB, got shape {image.shape}.")
        return image
    return read_image(image)


def _check_threshold(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}.")
    return number


def ranked_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    query_indices: torch.Tensor,
    labels: torch.Tensor,
    queries: Sequence[str],
    class_names: Sequence[str],
    image_size: tuple[int, int],
    nms: float | None = None,
    limit: int | None = None,
) -> Detections:
    """Box-query pairs -> :class:`Detections`, best first: class-wise NMS at ``nms`` (box IoU;
    None: none), then the ``limit`` best.

    Args:
        boxes: ``(N, 4)`` XYXY input-image pixels; scores ``(N,)``; ``query_indices`` and
            ``labels`` ``(N,)`` int64 (the query and its class).
    """
    if nms is not None and len(scores):
        order = torch.from_numpy(class_wise_nms(scores, labels, boxes=boxes, iou_threshold=nms))
    else:
        order = torch.argsort(scores, descending=True, stable=True)
    if limit is not None:
        order = order[: int(limit)]
    return Detections(
        boxes=boxes[order].numpy(),
        scores=scores[order].numpy(),
        query_indices=query_indices[order].numpy(),
        labels=labels[order].numpy(),
        queries=list(queries),
        class_names=list(class_names),
        image_size=(int(image_size[0]), int(image_size[1])),
    )


class OpenVocabularyDetector(nn.Module):
    """Base of the detectors (see the module docstring).

    Subclasses set :attr:`default_box_threshold`, implement :meth:`score_chunk` and
    :meth:`query_chunks`, and set ``batch_size``, ``clip_boxes`` and ``max_detections``.
    """

    default_box_threshold: float = 0.1
    batch_size: int = 1
    clip_boxes: bool = True
    max_detections: int | None = None

    def query_chunks(self, queries: Sequence[str]) -> list[list[int]]:
        """The query indices of each model call, in order (every query in one chunk).

        Raises:
            VocabularyError: a query alone is longer than the model's text length.
        """
        raise NotImplementedError

    def score_chunk(
        self, images: Sequence[np.ndarray], queries: Sequence[str]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image ``(boxes (P, 4) float XYXY input pixels, logits (P, len(queries)))``."""
        raise NotImplementedError

    #: whether the candidate boxes depend on the text (then every chunk has boxes of its own)
    boxes_depend_on_text: bool = False

    @torch.no_grad()
    def detect(
        self,
        images: Any,
        queries: Any,
        box_threshold: float | None = None,
        score_threshold: float | None = None,
        nms: float | None = None,
        max_detections: int | None = None,
    ) -> Detections | list[Detections]:
        """Detect ``queries`` in one image (-> :class:`Detections`) or a list (-> a list).

        Raises:
            VocabularyError: no query, an empty one, or one too long for the model.
            ConfigError: a threshold outside [0, 1].
        """
        single = not isinstance(images, (list, tuple))
        arrays = [_as_image(image) for image in ([images] if single else images)]
        query_set = as_query_set(queries)
        box_t = _check_threshold(
            self.default_box_threshold if box_threshold is None else box_threshold,
            "box_threshold",
        )
        score_t = (
            None
            if score_threshold is None
            else _check_threshold(score_threshold, "score_threshold")
        )
        nms_t = None if nms is None else _check_threshold(nms, "nms")
        limit = self.max_detections if max_detections is None else max_detections
        chunks = self.query_chunks(query_set.queries)
        results: list[Detections] = []
        step = max(1, int(self.batch_size))
        for start in range(0, len(arrays), step):
            batch = arrays[start : start + step]
            per_chunk = [
                self.score_chunk(batch, [query_set.queries[i] for i in chunk]) for chunk in chunks
            ]
            for position, image in enumerate(batch):
                blocks = [(outputs[position], chunk) for outputs, chunk in zip(per_chunk, chunks)]
                results.append(
                    self._select(image.shape[:2], blocks, query_set, box_t, score_t, nms_t, limit)
                )
        return results[0] if single else results

    def _blocks(
        self, blocks: list[tuple[tuple[torch.Tensor, torch.Tensor], list[int]]]
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(boxes, scores, query indices)`` per candidate set; OWL's chunks share their boxes,
        so their scores are put side by side (the best query over all of them counts)."""
        if self.boxes_depend_on_text or len(blocks) == 1:
            return [
                (boxes, scores, torch.as_tensor(chunk, dtype=torch.long))
                for (boxes, scores), chunk in blocks
            ]
        boxes = blocks[0][0][0]
        scores = torch.cat([scores for (_, scores), _ in blocks], dim=1)
        indices = torch.as_tensor([i for _, chunk in blocks for i in chunk], dtype=torch.long)
        return [(boxes, scores, indices)]

    def _select(
        self,
        size: tuple[int, int],
        blocks: list,
        query_set: QuerySet,
        box_t: float,
        score_t: float | None,
        nms_t: float | None,
        limit: int | None,
    ) -> Detections:
        height, width = int(size[0]), int(size[1])
        all_boxes, all_scores, all_queries = [], [], []
        for boxes, scores, indices in self._blocks(blocks):
            boxes, logits = boxes.float().cpu(), scores.float().cpu()
            if logits.shape[0] == 0 or logits.shape[1] == 0:
                continue
            best_logit, best_query = logits.max(dim=1)
            best, scores = torch.sigmoid(best_logit), torch.sigmoid(logits)
            kept = best > box_t
            if score_t is None:
                rows = torch.nonzero(kept).flatten()
                columns = best_query[rows]
            else:
                rows, columns = torch.nonzero((scores > score_t) & kept[:, None], as_tuple=True)
            all_boxes.append(boxes[rows])
            all_scores.append(scores[rows, columns])
            all_queries.append(indices[columns])
        boxes = torch.cat(all_boxes) if all_boxes else torch.zeros(0, 4)
        scores = torch.cat(all_scores) if all_scores else torch.zeros(0)
        queries = torch.cat(all_queries) if all_queries else torch.zeros(0, dtype=torch.long)
        if self.clip_boxes and len(boxes):
            boxes = torch.stack(
                [
                    boxes[:, 0].clamp(0, width),
                    boxes[:, 1].clamp(0, height),
                    boxes[:, 2].clamp(0, width),
                    boxes[:, 3].clamp(0, height),
                ],
                dim=1,
            )
        class_of = torch.as_tensor(query_set.query_to_class, dtype=torch.long)
        labels = class_of[queries] if len(queries) else queries
        return ranked_detections(
            boxes,
            scores,
            queries,
            labels,
            query_set.queries,
            query_set.class_names,
            (height, width),
            nms=nms_t,
            limit=limit,
        )
