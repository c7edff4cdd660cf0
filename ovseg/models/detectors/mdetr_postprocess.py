"""MDETR's post-processing: box scores, pixel boxes and the phrases a box points at.

* :func:`object_scores`: the reference ``PostProcess``: ``1 - softmax(pred_logits)[..., -1]``
  (the probability of "some object", whatever tokens it points at);
* :func:`pixel_boxes`: ``(cx, cy, w, h)`` normalised -> ``(x1, y1, x2, y2)`` scaled by
  ``(W, H, W, H)`` of the original image (``PostProcess``' ``target_sizes``);
* :func:`positive_map`: which caption token positions belong to each phrase, found as the
  reference's ``create_positive_map`` finds them (``char_to_token`` of the phrase's first and
  last character, stepping one or two characters inwards when a character has no token), every
  position between them included;
* :func:`phrase_probabilities`: per box and phrase, the softmax probability mass on the phrase's
  tokens (``"sum"``), or the largest token probability (``"max"``, ``PostProcessFlickr``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["object_scores", "phrase_probabilities", "pixel_boxes", "positive_map"]

TOKEN_REDUCTIONS = ("sum", "max")


def object_scores(pred_logits: torch.Tensor) -> torch.Tensor:
    """``(..., Q, K + 1)`` logits -> ``(..., Q)`` ``1 - p(no object)``."""
    return 1 - pred_logits.softmax(-1)[..., -1]


def pixel_boxes(pred_boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(..., 4)`` normalised ``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)`` in pixels."""
    cx, cy, w, h = pred_boxes.unbind(-1)
    corners = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    scale = torch.tensor([width, height, width, height], dtype=corners.dtype)
    return corners * scale.to(corners.device)


def _char_token(encoding: Any, char: int, steps: Sequence[int]) -> int | None:
    for step in steps:
        try:
            token = encoding.char_to_token(char + step)
        except Exception:  # noqa: BLE001 - out of range: as the reference, give up
            return None
        if token is not None:
            return int(token)
    return None


def positive_map(
    encoding: Any, spans: Sequence[tuple[int, int]], num_positions: int = 256
) -> torch.Tensor:
    """``(P, num_positions)`` bool: the token positions of each character span ``[start, end)``.

    ``encoding`` is a fast tokenizer's ``BatchEncoding`` of one caption. A span with no token
    (only spaces) gets an empty row.
    """
    result = torch.zeros(len(spans), num_positions, dtype=torch.bool)
    for row, (start, end) in enumerate(spans):
        first = _char_token(encoding, start, (0, 1, 2))
        last = _char_token(encoding, end - 1, (0, -1, -2))
        if first is None or last is None:
            continue
        result[row, first : last + 1] = True
    return result


def phrase_probabilities(
    pred_logits: torch.Tensor, phrase_map: torch.Tensor, reduce: str = "sum"
) -> torch.Tensor:
    """``(..., Q, K + 1)`` logits and a ``(P, K')`` map (``K' >= K + 1`` columns are cut to
    ``K + 1``) -> ``(..., Q, P)`` probability on each phrase's tokens (``sum`` or ``max``)."""
    prob = pred_logits.softmax(-1)
    columns = phrase_map[:, : prob.shape[-1]].to(prob.dtype)
    if columns.shape[1] < prob.shape[-1]:
        pad = prob.shape[-1] - columns.shape[1]
        columns = torch.cat([columns, columns.new_zeros(columns.shape[0], pad)], dim=1)
    if reduce == "sum":
        return prob @ columns.T
    if reduce == "max":
        return (prob.unsqueeze(-2) * columns).max(dim=-1).values
    raise ValueError(f"reduce must be one of {TOKEN_REDUCTIONS}, not {reduce!r}")
