"""Mask pooling: a mask's embedding is the area-weighted mean of the dense CLIP tokens under it."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.models.classifiers.scoring import MaskContext
from ovseg.registry import MASK_CLASSIFIERS

__all__ = ["MaskPoolingClassifier", "mask_area_weights", "pool_tokens"]


def mask_area_weights(masks: torch.Tensor | np.ndarray, grid_size: tuple[int, int]) -> torch.Tensor:
    """Fraction of each token cell a mask covers: ``(M, H, W)`` bool -> ``(M, h, w)`` float32.

    Area resampling (``adaptive_avg_pool2d``, what ``interpolate(mode="area")`` does): the token
    grid spans the image, cell ``(i, j)`` covers rows ``floor(i H / h)`` to ``ceil((i + 1) H / h)``
    (columns alike) and gets the mean of the mask there.
    """
    masks = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (M, H, W), got shape {tuple(masks.shape)}.")
    return F.adaptive_avg_pool2d(masks.float(), tuple(int(v) for v in grid_size))


def pool_tokens(tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of tokens ``(D, h, w)`` with weights ``(M, h, w)``, L2-normalised -> ``(M, D)``.

    A mask with no weight anywhere (empty) pools to the zero vector.
    """
    flat_tokens = tokens.float().flatten(1)  # (D, h*w)
    flat_weights = weights.float().flatten(1).to(flat_tokens.device)  # (M, h*w)
    total = flat_weights.sum(dim=1, keepdim=True)
    pooled = (flat_weights @ flat_tokens.t()) / total.clamp(min=1e-12)
    return F.normalize(pooled, dim=1)


@MASK_CLASSIFIERS.register()
class MaskPoolingClassifier:
    """Embeds each mask by pooling the image's dense CLIP tokens inside it.

    The tokens are ovseg's L2-normalised dense tokens (one direction per patch, each counting
    equally); the weights are each patch's covered area (:func:`mask_area_weights`); the mean is
    L2-normalised (:func:`pool_tokens`).
    """

    def embed(self, masks: torch.Tensor | np.ndarray, context: MaskContext) -> torch.Tensor:
        """``(M, H, W)`` bool masks in input pixels -> ``(M, D)`` L2-normalised embeddings."""
        if context.tokens is None:
            raise ConfigError("Mask pooling needs the image's dense tokens in the MaskContext.")
        tokens = context.tokens
        weights = mask_area_weights(masks, tokens.shape[-2:])
        return pool_tokens(tokens, weights)
