"""``TextClassifier``: a decode head's last layer with one output per class *name*, any vocabulary.

A closed-set head ends in a 1x1 convolution with one weight row ``w_k`` and bias ``b_k`` per
class. Here the rows come from the (prompted, context-updated, L2-normalised) class embeddings
``t_hat_k`` through one learned map: ``w_k = Q^T t_hat_k``, ``b_k = q_0 . t_hat_k``, so

    logits[b, k, i, j] = t_hat[b, k] . (Q f[b, :, i, j] + q_0)

i.e. the head projects every pixel's feature into the text space (a 1x1 convolution ``Q, q_0``
to ``D`` channels) and scores it against each class embedding. For a fixed vocabulary of
``K <= D`` linearly independent embeddings every set of rows and biases is reachable, so this
is as expressive as the closed-set layer; it also accepts vocabularies never seen in training.
Dropout2d (0.1 in the recipes) precedes it, and the projection starts like the reference's
classifier (normal, std 0.01; bias 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TextClassifier(nn.Module):
    """``(B, C, H, W)`` features and ``(B, K, D)`` class embeddings -> ``(B, K, H, W)`` logits."""

    def __init__(self, in_channels: int, text_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Conv2d(in_channels, text_dim, kernel_size=1)
        nn.init.normal_(self.proj.weight, std=0.01)
        nn.init.zeros_(self.proj.bias)

    def forward(self, features: Tensor, text: Tensor) -> Tensor:
        pixels = self.proj(self.dropout(features))
        text = F.normalize(text, dim=-1, p=2)
        return torch.einsum("bdhw,bkd->bkhw", pixels, text)
