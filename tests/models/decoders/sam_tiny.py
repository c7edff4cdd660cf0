"""Tiny random SAMs for CPU tests (shared test helper).

``tiny_sam`` scales the output layers of segment-anything's random initialisation so that mask
logits reach a few units (the untrained hypernetworks give |logits| << 1, so every stability
score would be 0) and predicted IoUs spread around 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from segment_anything.modeling import Sam

from ovseg.data.coco_writer import mask_to_polygons, mask_to_rle
from ovseg.models.decoders.sam_build import build_sam

TINY_SAM = {
    "encoder_embed_dim": 32,
    "encoder_depth": 1,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [0],
    "image_size": 64,
    "patch_size": 8,
    "window_size": 0,
    "use_rel_pos": True,
    "prompt_embed_dim": 32,
    "mask_in_chans": 8,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "iou_head_hidden_dim": 32,
}
# the same, with windowed attention in a second block (the official models' layout)
TINY_WINDOWED_SAM = {
    **TINY_SAM,
    "encoder_depth": 2,
    "encoder_global_attn_indexes": [1],
    "window_size": 4,
}


def tiny_sam(seed: int = 1, config: dict | None = None) -> Sam:
    """A random tiny SAM whose masks and scores are varied enough to exercise every filter."""
    torch.manual_seed(seed)
    sam = build_sam(config or TINY_SAM)
    with torch.no_grad():
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(300.0)
        head = sam.mask_decoder.iou_prediction_head.layers[-1]
        head.weight.mul_(2.0)
        head.bias.add_(0.5)
    return sam


def random_image(height: int = 40, width: int = 48, seed: int = 0) -> np.ndarray:
    """HWC uint8 RGB: flat rectangles on a flat background (non-square on purpose)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 30, dtype=np.uint8)
    for _ in range(5):
        y0, x0 = rng.integers(0, height - 8), rng.integers(0, width - 8)
        h, w = rng.integers(6, height // 2), rng.integers(6, width // 2)
        image[y0 : y0 + h, x0 : x0 + w] = rng.integers(80, 255, 3, dtype=np.uint8)
    return image


def write_tiny_coco(root: Path, count: int = 6, height: int = 40, width: int = 48) -> dict:
    """A small COCO instances dataset of rectangles and discs (RLE, one as polygons).

    Image 2 has no instance (readers skip it). Returns ``{"ann_file", "img_dir", "masks":
    {image_id: (n, H, W) bool}}``.
    """
    rng = np.random.default_rng(0)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, truth = [], [], {}
    yy, xx = np.mgrid[:height, :width]
    for image_id in range(1, count + 1):
        image = np.full((height, width, 3), 20, dtype=np.uint8)
        masks = []
        for k in range(0 if image_id == 2 else 1 + image_id % 3):
            if k % 2 == 0:
                y0, x0 = rng.integers(0, height - 12), rng.integers(0, width - 12)
                mask = np.zeros((height, width), dtype=bool)
                mask[y0 : y0 + rng.integers(6, 12), x0 : x0 + rng.integers(6, 12)] = True
            else:
                cy, cx, r = rng.integers(8, height - 8), rng.integers(8, width - 8), 6
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            mask &= ~np.any(masks, axis=0) if masks else True  # visible part only
            image[mask] = rng.integers(60, 255, 3, dtype=np.uint8)
            masks.append(mask)
        Image.fromarray(image).save(img_dir / f"{image_id:04d}.png")
        images.append(
            {"id": image_id, "file_name": f"{image_id:04d}.png", "height": height, "width": width}
        )
        for mask in masks:
            segmentation = (
                mask_to_polygons(mask) if image_id == 1 else mask_to_rle(mask)
            )  # both encodings
            ys, xs = np.nonzero(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": segmentation,
                    "area": float(mask.sum()),
                    "bbox": [
                        float(xs.min()),
                        float(ys.min()),
                        float(xs.max() + 1 - xs.min()),
                        float(ys.max() + 1 - ys.min()),
                    ],
                    "iscrowd": 0,
                }
            )
        truth[image_id] = np.stack(masks) if masks else np.zeros((0, height, width), bool)
    ann_file = root / "instances.json"
    ann_file.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "thing", "supercategory": "thing"}],
            }
        )
    )
    return {"ann_file": ann_file, "img_dir": img_dir, "masks": truth}
