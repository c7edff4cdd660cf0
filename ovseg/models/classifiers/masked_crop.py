"""Masked crops: each mask's square crop of the image goes through CLIP's image encoder."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.models.classifiers.nms import box_masks, boxes_from_masks
from ovseg.models.classifiers.scoring import MaskContext
from ovseg.registry import MASK_CLASSIFIERS

__all__ = ["MaskedCropClassifier", "build_crop_classifier", "crop_masks", "embed_box_crops"]


def crop_masks(
    image: np.ndarray,
    masks: torch.Tensor | np.ndarray,
    size: int,
    fill: Sequence[float],
    *,
    context_scale: float = 1.0,
    mask_background: bool = True,
) -> torch.Tensor:
    """One square crop per mask, resized to ``size`` -> ``(M, 3, size, size)`` float32 in [0, 1].

    For a mask with box ``(x1, y1, x2, y2)`` (exclusive ends) the crop is the square of side
    ``s = ceil(max(x2 - x1, y2 - y1) * context_scale)`` (at least 1) with its top-left pixel at
    ``(floor(cx - s / 2), floor(cy - s / 2))``, ``(cx, cy)`` the box centre. Parts outside the
    image, and with ``mask_background`` the pixels outside the mask, take the colour ``fill``
    (RGB in [0, 1]; CLIP's mean, so they normalise to zero). A square keeps the object's aspect
    ratio; the resize is bilinear with antialiasing.
    """
    masks = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks).bool()
    height, width = image.shape[:2]
    if masks.ndim != 3 or tuple(masks.shape[1:]) != (height, width):
        raise ValueError(
            f"masks must be (M, {height}, {width}) for a {width}x{height} image, got "
            f"{tuple(masks.shape)}."
        )
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    fill_t = torch.tensor(list(fill), dtype=torch.float32).view(3, 1, 1)
    crops = []
    for mask, (x1, y1, x2, y2) in zip(masks, boxes_from_masks(masks).tolist()):
        side = max(1, math.ceil(max(x2 - x1, y2 - y1) * context_scale))
        left = math.floor((x1 + x2) / 2 - side / 2)
        top = math.floor((y1 + y2) / 2 - side / 2)
        source = torch.where(mask[None], pixels, fill_t) if mask_background else pixels
        canvas = fill_t.expand(3, side, side).clone()
        sx0, sy0 = max(left, 0), max(top, 0)
        sx1, sy1 = min(left + side, width), min(top + side, height)
        if sx1 > sx0 and sy1 > sy0:
            canvas[:, sy0 - top : sy1 - top, sx0 - left : sx1 - left] = source[:, sy0:sy1, sx0:sx1]
        if side != size:
            canvas = F.interpolate(
                canvas[None],
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )[0]
        crops.append(canvas)
    if not crops:
        return torch.zeros(0, 3, size, size)
    return torch.stack(crops)


@MASK_CLASSIFIERS.register()
class MaskedCropClassifier:
    """Embeds each mask by CLIP's global image embedding of its masked square crop.

    Args:
        context_scale: crop side as a multiple of the box's longer side (1: tight).
        mask_background: paint pixels outside the mask with CLIP's mean colour.
        batch_size: crops per image-encoder call.
    """

    def __init__(
        self, context_scale: float = 1.0, mask_background: bool = True, batch_size: int = 32
    ) -> None:
        if float(context_scale) <= 0 or int(batch_size) < 1:
            raise ConfigError(
                f"context_scale must be positive and batch_size at least 1, got {context_scale}, "
                f"{batch_size}."
            )
        self.context_scale = float(context_scale)
        self.mask_background = bool(mask_background)
        self.batch_size = int(batch_size)

    def embed(self, masks: torch.Tensor | np.ndarray, context: MaskContext) -> torch.Tensor:
        """``(M, H, W)`` bool masks in input pixels -> ``(M, D)`` L2-normalised embeddings."""
        backbone = context.backbone
        if backbone is None:
            raise ConfigError("Masked crops need the CLIP backbone in the MaskContext.")
        fill = backbone.mean.flatten().tolist()
        crops = crop_masks(
            context.image,
            masks,
            backbone.image_size,
            fill,
            context_scale=self.context_scale,
            mask_background=self.mask_background,
        )
        embeds = [
            backbone.encode_image(
                backbone.normalize(crops[i : i + self.batch_size].to(backbone.device))
            )
            for i in range(0, len(crops), self.batch_size)
        ]
        if not embeds:
            return torch.zeros(0, backbone.embed_dim)
        return F.normalize(torch.cat(embeds).float().cpu(), dim=1)


def embed_box_crops(
    classifier: Any, image: np.ndarray, boxes: np.ndarray, backbone: Any
) -> torch.Tensor:
    """``(N, 4)`` XYXY input-pixel boxes of ``image`` -> ``(N, D)`` embeddings of their crops.

    Each box becomes a filled mask (:func:`~ovseg.models.classifiers.nms.box_masks`) for a
    crop classifier such as :class:`MaskedCropClassifier`, which crops around the mask's box
    (with ``mask_background: false``, exactly the box and its context).
    """
    height, width = image.shape[:2]
    context = MaskContext(image=image, tokens=None, backbone=backbone)
    return classifier.embed(box_masks(boxes, height, width), context)


def build_crop_classifier(config: Any = None) -> Any:
    """The crop classifier ``config`` builds (or is); ``None``: a default
    :class:`MaskedCropClassifier`."""
    return MASK_CLASSIFIERS.build_or_pass(
        config if config is not None else {"type": "MaskedCropClassifier"}, "crop classifier"
    )
