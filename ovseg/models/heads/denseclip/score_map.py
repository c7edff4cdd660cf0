"""Pixel-text score maps and the tensors DenseCLIP builds around them.

* :func:`visual_context`: ``[global; dense]`` tokens ``(B, 1 + hw, D)``, the memory of the
  context decoder.
* :func:`pixel_text_score_map`: ``s[b, k, i, j] = <z_hat[b, :, i, j], t_hat[b, k]>``, the cosine of
  L2-normalised dense visual embeddings and prompted class embeddings, ``(B, K, h, w)``.
* :func:`score_text_features`: the score map as a vocabulary-independent feature map (see below).

How the score map enters the decode head without a fixed class count. The reference
concatenates the ``K`` score channels to one backbone level, so the first layer reading them
holds ``K`` class-specific weight columns ``w_k``. Here the columns come from the class
embeddings through one learned map ``P``: ``w_k = P t_hat_k / K``. That layer's response,
``sum_k w_k s_k = P (1/K) sum_k s_k t_hat_k``, is computed by concatenating the ``D`` channels
``(1/K) sum_k s_k t_hat_k`` instead of the ``K`` score channels and letting the layer's own weights
play ``P``. For a fixed vocabulary whose ``K <= D`` normalised embeddings are linearly
independent, every choice of ``w_k`` is reachable, so the layer is as expressive as the
reference's; and it is defined for any vocabulary. The ``1/K`` keeps the feature's scale
comparable between vocabularies of different sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def visual_context(global_embed: Tensor, dense: Tensor) -> Tensor:
    """``(B, D)`` and ``(B, D, h, w)`` -> ``(B, 1 + h*w, D)`` (global first, then row-major)."""
    batch, dim = global_embed.shape
    tokens = torch.cat([global_embed.reshape(batch, dim, 1), dense.flatten(2)], dim=2)
    return tokens.permute(0, 2, 1)


def pixel_text_score_map(dense: Tensor, text: Tensor) -> Tensor:
    """Cosine of every position with every class: ``(B, D, h, w)``, ``(B, K, D)`` -> ``(B, K, h, w)``.

    Both inputs are L2-normalised here (over ``D``); the output lies in [-1, 1].
    """
    dense = F.normalize(dense, dim=1, p=2)
    text = F.normalize(text, dim=2, p=2)
    return torch.einsum("bchw,bkc->bkhw", dense, text)


def score_text_features(score_map: Tensor, text: Tensor) -> Tensor:
    """``(1/K) sum_k s[b, k] * t_hat[b, k]``: ``(B, K, h, w)``, ``(B, K, D)`` -> ``(B, D, h, w)``.

    ``text`` is L2-normalised here. See the module docstring for why this replaces the raw
    score channels.
    """
    text = F.normalize(text, dim=2, p=2)
    return torch.einsum("bkhw,bkd->bdhw", score_map, text) / score_map.shape[1]
