"""Per-query scores to per-class scores: the max over each class's names (synonyms)."""

from __future__ import annotations

import torch
from torch import Tensor

from ovseg.errors import VocabularyError

__all__ = ["reduce_synonyms"]


def _check_query_to_class(query_to_class: Tensor, num_queries: int, num_classes: int) -> Tensor:
    if query_to_class.dim() != 1 or query_to_class.numel() != num_queries:
        raise ValueError(
            f"query_to_class must be a 1-D tensor with one entry per query ({num_queries}), "
            f"got shape {tuple(query_to_class.shape)}."
        )
    if query_to_class.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"query_to_class must be an integer tensor, got {query_to_class.dtype}.")
    index = query_to_class.long()
    if num_queries and (int(index.min()) < 0 or int(index.max()) >= num_classes):
        raise VocabularyError(
            f"query_to_class holds class indices outside [0, {num_classes}); check that the "
            "vocabulary and the number of classes agree."
        )
    present = torch.zeros(num_classes, dtype=torch.bool, device=index.device)
    present[index] = True
    if not bool(present.all()):
        missing = torch.nonzero(~present).flatten().tolist()
        raise VocabularyError(
            f"classes {missing[:10]} have no query (name); give every class at least one name."
        )
    return index


def reduce_synonyms(logits: Tensor, query_to_class: Tensor, num_classes: int) -> Tensor:
    """Merge per-query score maps into per-class maps by taking the max over each class's queries.

    Args:
        logits: ``(B, Q, H, W)`` float scores, one channel per query (class name or synonym).
            Works on logits or on probabilities alike (max commutes with monotone maps).
        query_to_class: ``(Q,)`` integer tensor, the class index in ``[0, num_classes)`` of each
            query. Every class must own at least one query.
        num_classes: ``C``.

    Returns:
        ``(B, C, H, W)`` tensor of the same dtype and device as ``logits``; channel ``c`` is the
        element-wise max of the channels ``q`` with ``query_to_class[q] == c``.

    Raises:
        VocabularyError: a class has no query, or an index is out of range.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, Q, H, W), got shape {tuple(logits.shape)}.")
    batch, num_queries, height, width = logits.shape
    index = _check_query_to_class(query_to_class.to(logits.device), num_queries, num_classes)
    if num_classes == num_queries and bool(
        (index == torch.arange(num_queries, device=index.device)).all()
    ):
        return logits
    out = logits.new_full((batch, num_classes, height, width), float("-inf"))
    scatter_index = index.view(1, num_queries, 1, 1).expand(batch, num_queries, height, width)
    return out.scatter_reduce(1, scatter_index, logits, reduce="amax", include_self=True)
