"""Benchmark inputs: synthetic images of mixed sizes, class names, the pipeline config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.vocab.vocabulary import load_class_file

# Image sizes (H x W) cycled over the synthetic images: mostly the common 480x640, plus sizes
# that resize to other window layouts (375x500 -> 336x448, 640x427 -> 504x336).
DEFAULT_SIZES = ("480x640", "375x500", "480x640", "640x427")


def parse_size(text: str) -> tuple[int, int]:
    """``"480x640"`` -> ``(480, 640)`` (height, width)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"Image size {text!r} is not HEIGHTxWIDTH (e.g. 480x640).") from None
    if height <= 0 or width <= 0:
        raise ConfigError(f"Image size {text!r} must have positive sides.")
    return height, width


def synthetic_images(
    num_images: int, sizes: Sequence[tuple[int, int]], seed: int = 0
) -> list[np.ndarray]:
    """Seeded ``(H, W, 3)`` uint8 RGB images; sizes are taken from ``sizes`` in turn.

    Each image is a smooth colour field (random 32-pixel cells, bilinearly upsampled) with a
    little pixel noise, so score maps have regions and edges rather than pure noise.
    """
    if num_images <= 0:
        raise ConfigError(f"--images must be positive, got {num_images}.")
    if not sizes:
        raise ConfigError("Give at least one image size.")
    generator = torch.Generator().manual_seed(seed)
    images = []
    for index in range(num_images):
        height, width = sizes[index % len(sizes)]
        cells = torch.rand(1, 3, height // 32 + 2, width // 32 + 2, generator=generator)
        field = F.interpolate(cells, size=(height, width), mode="bilinear", align_corners=False)
        noise = torch.rand(1, 3, height, width, generator=generator) * 0.1
        pixels = ((field * 0.9 + noise).clamp(0, 1) * 255).round().to(torch.uint8)
        images.append(pixels[0].permute(1, 2, 0).contiguous().numpy())
    return images


def vocabulary_names(num_classes: int) -> list[str]:
    """``num_classes`` distinct class names: ADE20K's display names, then ``class <i>``."""
    if num_classes <= 0:
        raise ConfigError(f"--classes must be positive, got {num_classes}.")
    names = list(dict.fromkeys(names[0] for names in load_class_file("ade.txt")))
    names += [f"class {i}" for i in range(len(names), num_classes)]
    return names[:num_classes]


def benchmark_config(
    model_name: str,
    dense_mode: str,
    *,
    short_side: int,
    max_long_side: int | None,
    crop: int,
    stride: int,
    batch_size: int,
    templates: str,
    logit_scale: float,
    device: str,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The mapping given to :func:`ovseg.create_pipeline`: random-init fp32 weights, slide mode,
    no PAMR and no thresholds (plain argmax, as the baseline)."""
    return {
        "pipeline": {
            "type": "SemanticSegmenter",
            "backbone": {
                "type": "ClipBackbone",
                "model_name": model_name,
                "pretrained": None,
                "dense_mode": dense_mode,
                "templates": templates,
                "precision": precision,
                "device": device,
            },
            "logit_scale": logit_scale,
            "inference": {
                "short_side": short_side,
                "max_long_side": max_long_side,
                "mode": "slide",
                "crop_size": crop,
                "stride": stride,
                "batch_size": batch_size,
            },
            "postprocess": {
                "prob_threshold": 0.0,
                "area_threshold": 0.0,
                "background_index": None,
                "pamr": None,
            },
        }
    }
