"""Turn dense pixel-text scores into a label map, the way training-free dense-CLIP methods do.

The order of operations follows the evaluation code of SCLIP (wangf3014/SCLIP,
``clip_segmentor.py`` ``postprocess_result``), ClearCLIP (mc-lan/ClearCLIP,
``clearclip_segmentor.py``) and NACLIP (sinahmr/NACLIP, ``naclip.py``):

1. scale the cosine logits (the caller does this) and softmax over **all queries**; a class
   may have several queries (synonyms), and the softmax runs before they are merged;
2. merge synonyms by taking, per class, the max probability over its queries;
3. (SCLIP on VOC21 only) area threshold: classes, other than the background, whose predicted
   area is a small fraction of the non-background area are suppressed (probability set to 0);
4. argmax over classes; pixels whose top probability is below ``prob_threshold`` get the
   background index.

Which preset uses which knob (see ``ovseg/model_zoo/presets``): every method uses steps 1, 2
and 4; only ``sclip-vitb16-voc21`` sets ``area_threshold`` (0.1). The three methods agree on
everything else, so there is a single code path. NACLIP additionally renormalises the
probabilities it stores after the labels are taken; that does not change the labels, and is
left to the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ovseg.errors import ConfigError
from ovseg.structures import UNLABELLED, OVSegResult
from ovseg.vocab.synonyms import reduce_synonyms

if TYPE_CHECKING:
    from ovseg.vocab import Vocabulary

__all__ = ["labels_from_logits", "reduce_synonyms", "semantic_result"]


def _suppress_small_classes(
    probs: Tensor, area_threshold: float, background_index: int | None
) -> Tensor:
    """Zero the probability maps of classes whose predicted area is too small.

    A class (other than the background) is kept when its number of argmax pixels is strictly
    greater than ``area_threshold`` times the number of pixels predicted as any non-background
    class. The background class is never suppressed. Without a background class, the
    reference is all pixels.
    """
    num_classes = probs.shape[0]
    counts = torch.bincount(probs.argmax(0).flatten(), minlength=num_classes).to(probs.dtype)
    candidates = torch.ones(num_classes, dtype=torch.bool, device=probs.device)
    if background_index is not None:
        candidates[background_index] = False
    total = counts[candidates].sum()
    keep = (counts > area_threshold * total) | ~candidates
    return probs * keep.to(probs.dtype).view(num_classes, 1, 1)


def labels_from_logits(
    logits: Tensor,
    *,
    prob_threshold: float = 0.0,
    area_threshold: float = 0.0,
    background_index: int | None = 0,
    query_to_class: Tensor | None = None,
    num_classes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Label map from scaled pixel-text logits, in the order of the SCLIP/ClearCLIP/NACLIP code.

    Args:
        logits: ``(C, H, W)`` float scores already multiplied by the logit scale (cosine
            similarity x scale). With ``query_to_class`` they are per-query: ``(Q, H, W)``.
        prob_threshold: pixels whose highest class probability is strictly below this value are
            labelled ``background_index``. ``0`` disables it.
        area_threshold: classes other than the background whose argmax area is not strictly
            greater than this fraction of the non-background area get probability 0 everywhere
            (SCLIP's ``area_thd``). Applied before the argmax and the probability threshold.
            ``0`` disables it.
        background_index: index of the background class, or ``None`` when the vocabulary has
            none (then ``prob_threshold`` must be 0).
        query_to_class: optional ``(Q,)`` class index of each query. When given, the softmax runs
            over the ``Q`` queries and each class then takes the max over its queries, as the
            reference code does (this changes the probabilities, hence the thresholds' effect,
            compared with merging logits first).
        num_classes: ``C``; required with ``query_to_class``.

    Returns:
        ``labels``: ``(H, W)`` int64 class indices in ``[0, C)``.
        ``probs``: ``(C, H, W)`` float32 class probabilities after synonym merging and area
        suppression (not renormalised; with synonyms they need not sum to 1).

    Raises:
        ConfigError: a probability threshold without a background class, or a threshold outside
            ``[0, 1]``.
        VocabularyError: ``query_to_class`` does not cover every class.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (C, H, W), got shape {tuple(logits.shape)}.")
    for name, value in (("prob_threshold", prob_threshold), ("area_threshold", area_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(
                f"{name} must lie in [0, 1], got {value}; fix the preset or override."
            )
    if background_index is None and prob_threshold > 0:
        raise ConfigError(
            "prob_threshold > 0 needs a background class to assign low-confidence pixels to; set "
            "postprocess.background_index or use prob_threshold: 0."
        )

    probs = torch.softmax(logits.float(), dim=0)
    if query_to_class is not None:
        if num_classes is None:
            raise ValueError("num_classes is required together with query_to_class.")
        probs = reduce_synonyms(probs.unsqueeze(0), query_to_class, num_classes).squeeze(0)
    num_classes = probs.shape[0]
    if background_index is not None and not 0 <= background_index < num_classes:
        raise ConfigError(
            f"background_index {background_index} is outside the {num_classes} classes; point it "
            "at the background line of the vocabulary or set it to null."
        )

    if area_threshold > 0:
        probs = _suppress_small_classes(probs, area_threshold, background_index)

    # one pass for both; max returns the first maximum on ties, like argmax in the reference
    top_prob, labels = probs.max(dim=0)
    if background_index is not None and prob_threshold > 0:
        labels = torch.where(top_prob < prob_threshold, background_index, labels)
    return labels, probs


def semantic_result(
    logits: Tensor,
    vocab: Vocabulary,
    *,
    background_index: int | None,
    prob_threshold: float,
    area_threshold: float,
    meta: dict[str, Any] | None = None,
) -> OVSegResult:
    """An :class:`OVSegResult` from ``(Q, H, W)`` per-query logits (already scaled).

    With a background class, pixels whose best probability is below ``prob_threshold`` take it
    (as :func:`labels_from_logits` does); without one, they become ``UNLABELLED``.
    """
    labels, probs = labels_from_logits(
        logits,
        prob_threshold=prob_threshold if background_index is not None else 0.0,
        area_threshold=area_threshold,
        background_index=background_index,
        query_to_class=vocab.query_to_class,
        num_classes=len(vocab),
    )
    if background_index is None and prob_threshold > 0:
        labels = torch.where(probs.amax(0) < prob_threshold, UNLABELLED, labels)
    # each pixel's label probability where the probabilities are (on the device), so that only
    # the maps leave it; 0 where UNLABELLED
    valid = labels != UNLABELLED
    label_scores = probs.gather(0, torch.where(valid, labels, 0)[None])[0]
    label_scores = torch.where(valid, label_scores, 0.0)
    return OVSegResult(
        sem_seg=labels.cpu().numpy().astype(np.int64, copy=False),
        class_names=vocab.names,
        probs=probs.cpu().numpy().astype(np.float32, copy=False),
        meta=dict(meta or {}),
        label_scores=label_scores.cpu().numpy().astype(np.float32, copy=False),
    )
