"""Image inputs of READ: the vision tower's centre crop and SAM's padded square.

For one HWC uint8 RGB image of any size (input-image pixels, ``(H, W)``):

* vision tower (LLaVA / LISA use ``CLIPImageProcessor`` with its defaults): resize so the short
  side is ``S`` (PIL bicubic on uint8, the long side ``int(S * long / short)``), crop the
  centred ``S x S`` square (offset ``(side - S) // 2``), scale to [0, 1], normalise with the
  tower's mean / std -> ``(3, S, S)`` float32. The tokens therefore cover the centred square of
  the image (:meth:`ovseg.models.prompts.similarity.GridPlacement.center_crop`).
* SAM (segment-anything's ``ResizeLongestSide`` + ``Sam.preprocess``): long side resized to the
  model's ``img_size`` (1024), normalised with SAM's pixel mean / std, zero-padded bottom/right
  to a square -> ``(3, img_size, img_size)``; ``input_size`` is the resized ``(h, w)`` before
  padding, ``original_size`` the image's ``(H, W)``; masks come back to ``(H, W)`` through
  ``Sam.postprocess_masks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ovseg.errors import ImageReadError

__all__ = ["ReadImage", "clip_center_crop", "sam_input"]


@dataclass
class ReadImage:
    """One image prepared for :class:`~ovseg.models.multimodal.read.ReadModel`.

    Attributes:
        clip_pixels: ``(3, S, S)`` float32, the vision tower's normalised centre crop.
        sam_pixels: ``(3, T, T)`` float32, SAM's normalised, padded input (``T`` = img_size).
        input_size: ``(h, w)`` of the resized image inside ``sam_pixels``.
        original_size: ``(H, W)`` of the input image.
    """

    clip_pixels: torch.Tensor
    sam_pixels: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageReadError(
            f"Expected an HWC uint8 RGB image, got shape {image.shape} and dtype {image.dtype}."
        )
    if min(image.shape[:2]) < 1:
        raise ImageReadError(f"The image is empty ({image.shape[0]}x{image.shape[1]}).")
    return image


def clip_center_crop(
    image: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """CLIPImageProcessor's default path: ``(3, size, size)`` float32 (see the module docstring)."""
    image = _check_rgb(image)
    height, width = image.shape[:2]
    short, long = min(height, width), max(height, width)
    long_out = max(int(size * long / short), size)
    new_h, new_w = (size, long_out) if height <= width else (long_out, size)
    resized = np.asarray(
        Image.fromarray(image).resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
    )
    top, left = (new_h - size) // 2, (new_w - size) // 2
    crop = resized[top : top + size, left : left + size]
    pixels = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean_t) / std_t


def sam_input(image: np.ndarray, sam: torch.nn.Module) -> tuple[torch.Tensor, tuple[int, int]]:
    """SAM's input: ``((3, T, T) float32, input_size (h, w))`` for a segment-anything ``Sam``."""
    from segment_anything.utils.transforms import ResizeLongestSide

    image = _check_rgb(image)
    transform = ResizeLongestSide(int(sam.image_encoder.img_size))
    resized = transform.apply_image(image)
    pixels = torch.as_tensor(resized).permute(2, 0, 1).contiguous().float()
    device = sam.pixel_mean.device
    padded = sam.preprocess(pixels[None].to(device))[0]
    return padded.cpu(), (int(resized.shape[0]), int(resized.shape[1]))
