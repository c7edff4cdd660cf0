"""Dense CLIP tokens of a whole image, the patch grid spanning it (for point prompts and masks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.inference.resize import prepare_image

__all__ = ["whole_image_tokens"]


@torch.inference_mode()
def whole_image_tokens(
    backbone: Any, image: np.ndarray, short_side: int | None, max_long_side: int | None
) -> torch.Tensor:
    """``(D, h, w)`` L2-normalised dense tokens of ``image`` (HWC uint8 RGB) seen whole.

    The image is resized keeping its ratio (``short_side``, long side capped at
    ``max_long_side``), normalised with the backbone's statistics and encoded in one pass
    (``backbone.encode_dense``); the token grid spans the resized image. A side shorter than
    one patch is zero-padded and the tokens of the padding are dropped.
    """
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    tensor, resized = prepare_image(
        pixels.to(backbone.device),
        short_side,
        max_long_side,
        backbone.normalize,
        min_side=backbone.patch_size,
    )
    tokens = F.normalize(backbone.encode_dense(tensor), dim=1)[0]
    if tuple(tensor.shape[-2:]) != tuple(resized):
        rows = max(1, round(tokens.shape[1] * resized[0] / tensor.shape[-2]))
        cols = max(1, round(tokens.shape[2] * resized[1] / tensor.shape[-1]))
        tokens = tokens[:, :rows, :cols]
    return tokens
