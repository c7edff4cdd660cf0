"""Writing per-image results as PNGs and JSON (every file written atomically).

Semantic: label PNG, colour overlay with legend, JSON summary. Referring: mask, overlay (mask,
heat map, points), similarity, JSON. Instances: overlay with boxes and captions, instance-id
PNG, JSON.

Label, mask, id and similarity PNGs and the JSON keep the input's size; the pictures (overlays)
of inputs whose long side is under :data:`~ovseg.visualize.PICTURE_MIN_LONG_SIDE` are enlarged
by an integer factor (:func:`~ovseg.visualize.picture_scale`). With ``side_by_side`` a picture
shows the input first (``image | overlay``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ovseg.errors import ConfigError
from ovseg.fileio import atomic_write_text
from ovseg.io import write_png_atomic
from ovseg.structures import Instances, OVSegResult, ReasoningResult, ReferringResult
from ovseg.visualize import (
    draw_instances,
    overlay,
    picture_scale,
    reasoning_overlay,
    referring_overlay,
)


def _with_source(summary: dict, source: str | None) -> dict:
    """``summary`` led by ``"source"`` (the input image's name) when one is given."""
    return {"source": source, **summary} if source is not None else summary


def write_semantic_outputs(
    result: OVSegResult,
    image: np.ndarray,
    out_dir: Path,
    stem: str,
    *,
    source: str | None = None,
    side_by_side: bool = False,
) -> dict[str, Path]:
    """Write ``<stem>_labels.png`` (class index per pixel, vocabulary order; 255 unlabelled;
    16-bit when there are more than 255 classes), ``<stem>_overlay.png`` (enlarged when small,
    with a legend; ``image | overlay | legend`` with ``side_by_side``) and ``<stem>.json``
    (written last; with ``source``, its ``"source"`` names the input image)."""
    out_dir = Path(out_dir)
    labels = result.sem_seg
    dtype = np.uint8 if len(result.class_names) < 255 else np.uint16
    paths = {
        "labels": out_dir / f"{stem}_labels.png",
        "overlay": out_dir / f"{stem}_overlay.png",
        "json": out_dir / f"{stem}.json",
    }
    write_png_atomic(labels.astype(dtype), paths["labels"])
    picture = overlay(
        image,
        labels,
        result.class_names,
        scale=picture_scale(image.shape),
        side_by_side=side_by_side,
    )
    write_png_atomic(picture, paths["overlay"])
    summary = _with_source(result.to_dict(), source)
    atomic_write_text(paths["json"], json.dumps(summary, indent=2) + "\n")
    return paths


def write_referring_outputs(
    result: ReferringResult,
    image: np.ndarray,
    out_dir: Path,
    stem: str,
    *,
    source: str | None = None,
    side_by_side: bool = False,
) -> dict[str, Path]:
    """Write ``<stem>_mask.png`` (255 inside the mask, 0 outside), ``<stem>_overlay.png`` (mask
    with the points | heat map with the points, enlarged when small; the input first with
    ``side_by_side``), ``<stem>_similarity.png`` (the similarity map as grey levels,
    ``round(255 * s)``) and ``<stem>.json`` (phrase, score, box, points)."""
    out_dir = Path(out_dir)
    paths = {
        "mask": out_dir / f"{stem}_mask.png",
        "overlay": out_dir / f"{stem}_overlay.png",
        "similarity": out_dir / f"{stem}_similarity.png",
        "json": out_dir / f"{stem}.json",
    }
    write_png_atomic(result.mask.astype(np.uint8) * 255, paths["mask"])
    picture = referring_overlay(
        image, result, scale=picture_scale(image.shape), side_by_side=side_by_side
    )
    write_png_atomic(picture, paths["overlay"])
    grey = (np.clip(result.similarity, 0.0, 1.0) * 255).round().astype(np.uint8)
    write_png_atomic(grey, paths["similarity"])
    summary = _with_source({"image_size": list(result.mask.shape), **result.to_dict()}, source)
    atomic_write_text(paths["json"], json.dumps(summary, indent=2) + "\n")
    return paths


def write_reasoning_outputs(
    result: ReasoningResult,
    image: np.ndarray,
    out_dir: Path,
    stem: str,
    *,
    source: str | None = None,
    side_by_side: bool = False,
) -> dict[str, Path]:
    """Write ``<stem>_mask_<k>.png`` for each mask ``k`` (255 inside, 0 outside; none when the
    answer has no ``[SEG]``), ``<stem>_overlay.png`` (masks with their points and the answer,
    enlarged when small; the input first with ``side_by_side``) and ``<stem>.json`` (question,
    answer, per mask: score, area, box, points)."""
    out_dir = Path(out_dir)
    paths = {f"mask_{k}": out_dir / f"{stem}_mask_{k}.png" for k in range(len(result))}
    paths["overlay"] = out_dir / f"{stem}_overlay.png"
    paths["json"] = out_dir / f"{stem}.json"
    for k in range(len(result)):
        write_png_atomic(result.masks[k].astype(np.uint8) * 255, paths[f"mask_{k}"])
    picture = reasoning_overlay(
        image, result, scale=picture_scale(image.shape), side_by_side=side_by_side
    )
    write_png_atomic(picture, paths["overlay"])
    summary = {"image_size": [int(image.shape[0]), int(image.shape[1])], **result.to_dict()}
    for k, entry in enumerate(summary["masks"]):
        entry["file"] = paths[f"mask_{k}"].name
    atomic_write_text(paths["json"], json.dumps(_with_source(summary, source), indent=2) + "\n")
    return paths


def instance_id_map(instances: Instances) -> np.ndarray:
    """``(H, W)`` instance ids: ``k`` marks instance ``k - 1`` (``instances`` order), 0 none.

    Where masks overlap the higher-scored instance wins. uint8 up to 255 instances, else uint16.
    """
    height, width = instances.masks.shape[1:] if len(instances) else (0, 0)
    dtype = np.uint8 if len(instances) < 256 else np.uint16
    ids = np.zeros((height, width), dtype=dtype)
    for index in np.argsort(instances.scores, kind="stable"):  # lowest score painted first
        ids[instances.masks[index]] = index + 1
    return ids


def write_instance_outputs(
    result: Instances,
    image: np.ndarray,
    out_dir: Path,
    stem: str,
    *,
    image_id: int | None = None,
    category_ids: Sequence[int] | None = None,
    source: str | None = None,
    side_by_side: bool = False,
) -> dict[str, Path]:
    """Write ``<stem>_instances.png`` (masks with contours, boxes, ``name score``; enlarged when
    small; ``image | instances`` with ``side_by_side``), ``<stem>_instance_ids.png``
    (:func:`instance_id_map`: id ``k`` is the JSON's instance ``k - 1``; 0 background) and
    ``<stem>.json`` (per instance: label, name, score, box XYXY, area; with ``source``, its
    ``"source"`` names the input image).

    With ``image_id`` and ``category_ids`` (the COCO category id of each label) also
    ``<stem>_coco.json``: the instances as COCO results (``bbox`` XYWH, RLE masks), ready for
    :func:`ovseg.evaluation.coco.evaluate_coco`.
    """
    if (image_id is None) != (category_ids is None):
        raise ConfigError("COCO results need both image_id and category_ids (or neither).")
    out_dir = Path(out_dir)
    paths = {
        "overlay": out_dir / f"{stem}_instances.png",
        "ids": out_dir / f"{stem}_instance_ids.png",
        "json": out_dir / f"{stem}.json",
    }
    height, width = image.shape[:2]
    ids = instance_id_map(result) if len(result) else np.zeros((height, width), dtype=np.uint8)
    picture = draw_instances(
        image, result, scale=picture_scale(image.shape), side_by_side=side_by_side
    )
    write_png_atomic(picture, paths["overlay"])
    write_png_atomic(ids, paths["ids"])
    summary = _with_source(
        {
            "image_size": [height, width],
            "class_names": list(result.class_names),
            **result.to_dict(),
        },
        source,
    )
    atomic_write_text(paths["json"], json.dumps(summary, indent=2) + "\n")
    if image_id is not None:
        from ovseg.evaluation.coco import instances_to_coco_results, write_coco_results

        paths["coco"] = out_dir / f"{stem}_coco.json"
        write_coco_results(
            paths["coco"], instances_to_coco_results(result, image_id, list(category_ids))
        )
    return paths
