"""Writing per-image results as PNGs and JSON (every file written atomically).

Semantic: label PNG, colour overlay with legend, JSON summary. Referring: mask, overlay (mask,
heat map, points), similarity, JSON. Instances: overlay with boxes and captions, instance-id
PNG, JSON. Detections: overlay with boxes and captions, COCO results JSON, JSON.

Label, mask, id and similarity PNGs and the JSON keep the input's size; the pictures (overlays)
of inputs whose long side is under :data:`~ovseg.visualize.PICTURE_MIN_LONG_SIDE` are enlarged
by an integer factor (:func:`~ovseg.visualize.picture_scale`). With ``side_by_side`` a picture
shows the input first (``image | overlay``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ovseg.errors import ConfigError
from ovseg.fileio import atomic_write_text
from ovseg.io import write_png_atomic
from ovseg.structures import Detections, Instances, OVSegResult, ReasoningResult, ReferringResult
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


def _output_paths(out_dir: Path, stem: str, **suffixes: str) -> dict[str, Path]:
    """``{name: out_dir / (stem + suffix)}`` in the order given (``json=".json"`` ->
    ``<stem>.json``)."""
    out_dir = Path(out_dir)
    return {name: out_dir / f"{stem}{suffix}" for name, suffix in suffixes.items()}


def _write_picture(
    path: Path,
    draw: Callable[..., np.ndarray],
    image: np.ndarray,
    *subject,
    side_by_side: bool = False,
) -> None:
    """Write ``draw(image, *subject)`` as a PNG: enlarged when the input is small
    (:func:`~ovseg.visualize.picture_scale`), the input first with ``side_by_side``."""
    picture = draw(image, *subject, scale=picture_scale(image.shape), side_by_side=side_by_side)
    write_png_atomic(picture, path)


def _write_mask(mask: np.ndarray, path: Path) -> None:
    """Write a boolean ``(H, W)`` mask as a PNG: 255 inside, 0 outside."""
    write_png_atomic(mask.astype(np.uint8) * 255, path)


def _write_summary(path: Path, summary: dict, source: str | None) -> None:
    """Write the JSON summary (indented, ``"source"`` first when given), atomically."""
    atomic_write_text(path, json.dumps(_with_source(summary, source), indent=2) + "\n")


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
    labels = result.sem_seg
    dtype = np.uint8 if len(result.class_names) < 255 else np.uint16
    paths = _output_paths(out_dir, stem, labels="_labels.png", overlay="_overlay.png", json=".json")
    write_png_atomic(labels.astype(dtype), paths["labels"])
    _write_picture(
        paths["overlay"], overlay, image, labels, result.class_names, side_by_side=side_by_side
    )
    _write_summary(paths["json"], result.to_dict(), source)
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
    paths = _output_paths(
        out_dir,
        stem,
        mask="_mask.png",
        overlay="_overlay.png",
        similarity="_similarity.png",
        json=".json",
    )
    _write_mask(result.mask, paths["mask"])
    _write_picture(paths["overlay"], referring_overlay, image, result, side_by_side=side_by_side)
    grey = (np.clip(result.similarity, 0.0, 1.0) * 255).round().astype(np.uint8)
    write_png_atomic(grey, paths["similarity"])
    summary = {"image_size": list(result.mask.shape), **result.to_dict()}
    _write_summary(paths["json"], summary, source)
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
    masks = {f"mask_{k}": f"_mask_{k}.png" for k in range(len(result))}
    paths = _output_paths(out_dir, stem, **masks, overlay="_overlay.png", json=".json")
    for k in range(len(result)):
        _write_mask(result.masks[k], paths[f"mask_{k}"])
    _write_picture(paths["overlay"], reasoning_overlay, image, result, side_by_side=side_by_side)
    summary = {"image_size": [int(image.shape[0]), int(image.shape[1])], **result.to_dict()}
    for k, entry in enumerate(summary["masks"]):
        entry["file"] = paths[f"mask_{k}"].name
    _write_summary(paths["json"], summary, source)
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
    paths = _output_paths(
        out_dir, stem, overlay="_instances.png", ids="_instance_ids.png", json=".json"
    )
    height, width = image.shape[:2]
    ids = instance_id_map(result) if len(result) else np.zeros((height, width), dtype=np.uint8)
    _write_picture(paths["overlay"], draw_instances, image, result, side_by_side=side_by_side)
    write_png_atomic(ids, paths["ids"])
    summary = {
        "image_size": [height, width],
        "class_names": list(result.class_names),
        **result.to_dict(),
    }
    _write_summary(paths["json"], summary, source)
    if image_id is not None:
        from ovseg.evaluation.coco import instances_to_coco_results, write_coco_results

        paths["coco"] = Path(out_dir) / f"{stem}_coco.json"
        write_coco_results(
            paths["coco"], instances_to_coco_results(result, image_id, list(category_ids))
        )
    return paths


def detection_coco_results(result: Detections, image_id: int = 1) -> list[dict]:
    """Detections as COCO results entries: ``bbox``
    ``[x, y, w, h]`` in image pixels, ``category_id`` = class index + 1 (the ``categories`` of
    the JSON summary), best first."""
    return [
        {
            "image_id": int(image_id),
            "category_id": int(label) + 1,
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(score),
        }
        for (x1, y1, x2, y2), score, label in zip(
            result.boxes.tolist(), result.scores.tolist(), result.labels.tolist(), strict=True
        )
    ]


def write_detection_outputs(
    result: Detections,
    image: np.ndarray,
    out_dir: Path,
    stem: str,
    *,
    source: str | None = None,
    side_by_side: bool = False,
    image_id: int = 1,
) -> dict[str, Path]:
    """Write ``<stem>_detections.png`` (boxes with ``name score`` captions over the image),
    ``<stem>_coco.json`` (COCO results: :func:`detection_coco_results`) and ``<stem>.json``
    (per detection: label, name, query, score, box XYXY; ``categories`` maps the COCO
    ``category_id`` to names), the JSON last."""
    paths = _output_paths(out_dir, stem, overlay="_detections.png", coco="_coco.json", json=".json")
    height, width = image.shape[:2]
    boxes_only = Instances(
        masks=np.zeros((len(result), height, width), dtype=bool),
        boxes=result.boxes,
        scores=result.scores,
        labels=result.labels,
        class_names=list(result.class_names),
    )
    _write_picture(paths["overlay"], draw_instances, image, boxes_only, side_by_side=side_by_side)
    coco = detection_coco_results(result, image_id)
    atomic_write_text(paths["coco"], json.dumps(coco, allow_nan=False))
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(result.class_names)]
    _write_summary(paths["json"], {**result.to_dict(), "categories": categories}, source)
    return paths
