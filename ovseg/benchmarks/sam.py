"""Automatic SAM mask proposals: ovseg's batched generator against segment-anything's own.

Both run on the same SAM weights and the same images and include the image embedding; the run
checks that they return the same masks in the same order. The reference is
``segment_anything.SamAutomaticMaskGenerator`` (binary-mask output); ovseg's is
``SamDecoder.generate``. Default: the packaged ``ovseg-sam-tiny`` / ``shapes`` weights on
synthetic scenes (the embedded preset's setting); ``--model vit_b`` uses a random-init SAM.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from ovseg.benchmarks.machine import machine_info, peak_rss_mb


def _scenes(count: int, size: int, seed: int) -> list[np.ndarray]:
    from ovseg.data.synthetic import SyntheticSceneDataset

    data = SyntheticSceneDataset(num=count, seed=seed, split="val", image_size=size)
    return [sample["image"] for sample in data]


def _median_seconds(fn, images: list[np.ndarray], repeats: int) -> tuple[float, list[Any]]:
    times, outputs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = [fn(image) for image in images]
        times.append(time.perf_counter() - start)
    return statistics.median(times), outputs


def run_proposals_benchmark(
    model: str = "ovseg-sam-tiny",
    pretrained: str | None = "shapes",
    *,
    num_images: int = 8,
    image_size: int = 128,
    points_per_side: int = 32,
    points_per_batch: int = 64,
    pred_iou_thresh: float = 0.5,
    stability_score_thresh: float = 0.2,
    repeats: int = 3,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Seconds per image of both generators (median of ``repeats``) and their agreement."""
    from segment_anything import SamAutomaticMaskGenerator

    from ovseg.models.decoders.sam import SamDecoder

    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    decoder = SamDecoder(model, pretrained=pretrained)
    settings = {
        "points_per_side": points_per_side,
        "points_per_batch": points_per_batch,
        "pred_iou_thresh": pred_iou_thresh,
        "stability_score_thresh": stability_score_thresh,
    }
    reference = SamAutomaticMaskGenerator(decoder.model, output_mode="binary_mask", **settings)
    images = _scenes(num_images, image_size, seed)
    with torch.no_grad():
        ours_s, ours = _median_seconds(lambda im: decoder.generate(im, **settings), images, repeats)
        ref_s, refs = _median_seconds(reference.generate, images, repeats)
    same = total = 0
    for mine, theirs in zip(ours, refs, strict=True):
        total += max(len(mine.masks), len(theirs))
        if len(mine.masks) == len(theirs):
            same += sum(
                bool(np.array_equal(m.numpy(), t["segmentation"]))
                for m, t in zip(mine.masks, theirs, strict=True)
            )
    return {
        "model": model,
        "pretrained": pretrained,
        "settings": {**settings, "num_images": num_images, "image_size": image_size},
        "reference_seconds_per_image": ref_s / num_images,
        "ovseg_seconds_per_image": ours_s / num_images,
        "speedup": ref_s / ours_s,
        "masks": total,
        "identical_masks": same,
        "peak_rss_mb": peak_rss_mb(),
        "machine": machine_info(torch.device("cpu")),
    }


def format_markdown(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| generator | seconds / image | ratio | masks identical |",
            "| --- | ---: | ---: | --- |",
            f"| segment-anything SamAutomaticMaskGenerator | "
            f"{result['reference_seconds_per_image']:.3f} | 1.00x | |",
            f"| ovseg SamDecoder.generate | {result['ovseg_seconds_per_image']:.3f} | "
            f"{result['speedup']:.2f}x | {result['identical_masks']} of {result['masks']} |",
            f"\nmachine: {result['machine']['cpu']}, {result['machine']['torch_threads']} threads",
        ]
    )
