"""What a mask classifier sees, and how mask embeddings become class probabilities.

A mask classifier is called as ``classifier.embed(masks (M, H, W) bool, context) -> (M, D)``
L2-normalised embeddings in CLIP's joint space; :func:`class_probabilities` compares them with
the vocabulary's text embeddings the way :class:`~ovseg.pipelines.semantic.SemanticSegmenter`
scores pixels: cosine x ``logit_scale``, softmax over all queries (synonyms included), then per
class the max over its queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ovseg.errors import ConfigError
from ovseg.vocab import Vocabulary
from ovseg.vocab.synonyms import reduce_synonyms

__all__ = [
    "MaskContext",
    "class_probabilities",
    "ensemble_probabilities",
    "query_probabilities",
    "with_background_classes",
]


@dataclass
class MaskContext:
    """Everything a classifier may look at for one image.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB input image (masks are in its pixels).
        tokens: ``(D, h, w)`` L2-normalised dense CLIP tokens whose grid spans the whole image.
        backbone: the :class:`~ovseg.models.backbones.clip.ClipBackbone` that made them.
    """

    image: np.ndarray
    tokens: torch.Tensor | None
    backbone: Any


def query_probabilities(
    embeds: torch.Tensor, text: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """``softmax(logit_scale * cos(embeds, text))`` over queries: ``(M, D), (Q, D) -> (M, Q)``.

    Both sides are expected L2-normalised; an all-zero embedding gives the uniform distribution.
    """
    logits = float(logit_scale) * embeds.float() @ text.float().t().to(embeds.device)
    return torch.softmax(logits, dim=-1)


def ensemble_probabilities(
    pooled: torch.Tensor, cropped: torch.Tensor, crop_weight: float
) -> torch.Tensor:
    """Geometric ensemble ``pooled^(1-w) * cropped^w``, renormalised over queries (``(M, Q)``).

    The weighted geometric mean of two classifiers' probabilities, as FC-CLIP ensembles its
    in-vocabulary and out-of-vocabulary classifiers; ``w = 0`` returns ``pooled``.
    """
    if not 0.0 <= crop_weight <= 1.0:
        raise ConfigError(f"crop_weight must lie in [0, 1], got {crop_weight}.")
    if crop_weight == 0.0:
        return pooled
    tiny = torch.finfo(torch.float32).tiny
    log_p = (1 - crop_weight) * pooled.clamp(min=tiny).log() + crop_weight * cropped.clamp(
        min=tiny
    ).log()
    return torch.softmax(log_p, dim=-1)


def class_probabilities(query_probs: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    """Per-query probabilities ``(M, Q)`` -> per-class ``(M, C)`` (max over each class's names)."""
    if query_probs.shape[1] != len(vocab.queries):
        raise ValueError(
            f"{query_probs.shape[1]} query probabilities for {len(vocab.queries)} queries."
        )
    merged = reduce_synonyms(
        query_probs.t()[None, :, :, None], vocab.query_to_class, len(vocab)
    )  # (1, C, M, 1)
    return merged[0, :, :, 0].t()


def with_background_classes(vocab: Vocabulary, extra: Sequence[str]) -> Vocabulary:
    """``vocab`` followed by the ``extra`` names as classes of their own (indices >= len(vocab))."""
    if not extra:
        return vocab
    taken = {name.lower() for name in vocab.names}
    extra = [name for name in extra if name.lower() not in taken]
    return Vocabulary(
        vocab.classes + tuple((name,) for name in extra),
        tuple(vocab.names) + tuple(extra) if vocab.display_names else (),
    )
