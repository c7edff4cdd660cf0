"""COCO results files and their box / mask AP, computed by pycocotools' ``COCOeval``.

A COCO results file is a JSON list with one entry per predicted instance::

    {"image_id": 139, "category_id": 18, "score": 0.93,
     "bbox": [x, y, w, h],                                  (image pixels)
     "segmentation": {"size": [H, W], "counts": "<compressed RLE as str>"}}

``evaluate_coco`` scores such a list against a ground-truth COCO file with the standard
protocol (10 IoU thresholds 0.50:0.95, 101 recall points, up to 1/10/100 detections per image,
small/medium/large area ranges) and returns the 12 standard numbers per IoU type, in percent
(x100, like detectron2), plus each category's AP. A number pycocotools leaves undefined (-1: no
ground truth in that area range, or none of that category among the evaluated images) is NaN
here and null in JSON.

For segmentation the boxes are left out of the results (and for boxes the masks), as detectron2
does, so the area range of a predicted mask is its mask area, not its box area.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ovseg.data.coco_instances import CocoAnnotations, load_coco_instances
from ovseg.errors import EvaluationError
from ovseg.evaluation.jsonio import nan_to_none, write_json_atomic
from ovseg.evaluation.table import render_table
from ovseg.fileio import atomic_write_text
from ovseg.structures import Instances

STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
IOU_TYPES = ("bbox", "segm")
GroundTruth = COCO | CocoAnnotations | str | os.PathLike


def masks_to_rles(masks: np.ndarray) -> list[dict[str, Any]]:
    """``(N, H, W)`` bool masks -> N compressed RLEs ``{"size": [H, W], "counts": str}``."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}.")
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode()} for r in rles]


def instances_to_coco_results(
    instances: Instances,
    image_id: int,
    category_ids: Sequence[int],
    *,
    include_masks: bool = True,
) -> list[dict[str, Any]]:
    """One image's instances as COCO result entries (in the instances' order).

    Args:
        instances: the predictions; ``labels`` index ``category_ids``; boxes XYXY in image
            pixels (x2, y2 exclusive) become ``bbox`` ``[x1, y1, x2 - x1, y2 - y1]``.
        image_id: the ground-truth id of the image.
        category_ids: COCO category id of each label index (a dataset's ``category_ids``).
        include_masks: add ``segmentation`` (compressed RLE, counts as str).

    Raises:
        EvaluationError: a label has no category id (the vocabulary and the category list do
            not match).
    """
    labels = instances.labels
    if len(labels) and (labels.min() < 0 or labels.max() >= len(category_ids)):
        bad = sorted({int(v) for v in labels if v < 0 or v >= len(category_ids)})
        raise EvaluationError(
            f"Instances of image {image_id} have labels {bad} but only {len(category_ids)} "
            "category ids were given; predict with the dataset's class list as vocabulary."
        )
    rles = masks_to_rles(instances.masks) if include_masks and len(instances) else []
    results = []
    for i, ((x1, y1, x2, y2), score, label) in enumerate(
        zip(instances.boxes.tolist(), instances.scores.tolist(), labels.tolist())
    ):
        entry: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(category_ids[label]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": score,
        }
        if include_masks:
            entry["segmentation"] = rles[i]
        results.append(entry)
    return results


def write_coco_results(path: str | os.PathLike, results: Sequence[Mapping[str, Any]]) -> Path:
    """Write a COCO results list as strict JSON, atomically (NaN or numpy values are refused)."""
    return atomic_write_text(path, json.dumps(list(results), allow_nan=False))


def load_coco_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a COCO results JSON file (a list of result entries)."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EvaluationError(f"Cannot read COCO results {path} ({exc}).") from exc
    if not isinstance(data, list):
        raise EvaluationError(
            f"{path} must hold a JSON list of results ({{image_id, category_id, score, bbox, "
            f"segmentation}}), got a {type(data).__name__}."
        )
    return data


def load_ground_truth(gt: GroundTruth) -> COCO:
    """A pycocotools index from a ``COCO`` (as is), checked annotations, or a JSON path."""
    if isinstance(gt, COCO):
        return gt
    if isinstance(gt, CocoAnnotations):
        return gt.to_coco()
    if isinstance(gt, (str, os.PathLike)):
        return load_coco_instances(gt).to_coco()
    raise TypeError(f"gt must be a COCO object or a path, got {type(gt).__name__}.")


def _ids_text(ids: Iterable[Any], limit: int = 5) -> str:
    ids = sorted(set(ids))
    return ", ".join(map(str, ids[:limit])) + (
        f" and {len(ids) - limit} more" if len(ids) > limit else ""
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_finite_number(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


def check_results(results: Sequence[Mapping[str, Any]], gt: COCO, iou_types: Sequence[str]) -> None:
    """Refuse results that pycocotools would reject cryptically or silently mis-score.

    Raises:
        EvaluationError: an entry is not a mapping with integer ``image_id`` / ``category_id``
            and a finite ``score``; an image or category id is not in the ground truth; a
            ``bbox`` (for "bbox") or an RLE ``segmentation`` of the image's size (for "segm")
            is missing or malformed.
    """
    bad_entries, unknown_images, unknown_categories = [], set(), set()
    bad_boxes, bad_masks = [], []
    for index, entry in enumerate(results):
        if not (
            isinstance(entry, Mapping)
            and _is_int(entry.get("image_id"))
            and _is_int(entry.get("category_id"))
            and _is_finite_number(entry.get("score"))
        ):
            bad_entries.append(index)
            continue
        image = gt.imgs.get(entry["image_id"])
        if image is None:
            unknown_images.add(entry["image_id"])
        if entry["category_id"] not in gt.cats:
            unknown_categories.add(entry["category_id"])
        if "bbox" in iou_types:
            box = entry.get("bbox")
            if not (
                isinstance(box, (list, tuple))
                and len(box) == 4
                and all(map(_is_finite_number, box))
                and box[2] >= 0
                and box[3] >= 0
            ):
                bad_boxes.append(index)
        if "segm" in iou_types:
            segm = entry.get("segmentation")
            size = [image["height"], image["width"]] if image is not None else None
            if not (
                isinstance(segm, Mapping)
                and isinstance(segm.get("counts"), (str, bytes))
                and (size is None or list(segm.get("size", [])) == size)
            ):
                bad_masks.append(index)
    messages = []
    if bad_entries:
        messages.append(
            f"entries (list positions {_ids_text(bad_entries)}) are not mappings with integer "
            "image_id and category_id and a finite score"
        )
    if unknown_images:
        messages.append(
            f"image ids {_ids_text(unknown_images)} are not images of the ground truth; "
            "predict on the ground truth's images (or evaluate against the matching file)"
        )
    if unknown_categories:
        messages.append(
            f"category ids {_ids_text(unknown_categories)} are not categories of the ground "
            f"truth (it has {_ids_text(gt.cats)}); map label indices through the dataset's "
            "category_ids"
        )
    if bad_boxes:
        messages.append(
            f"entries (list positions {_ids_text(bad_boxes)}) have no 'bbox' of 4 finite "
            "numbers [x, y, w, h] with w, h >= 0"
        )
    if bad_masks:
        messages.append(
            f"entries (list positions {_ids_text(bad_masks)}) have no 'segmentation' RLE "
            "{size: [H, W] of their image, counts: str}"
        )
    if messages:
        raise EvaluationError("Cannot evaluate these results: " + "; ".join(messages) + ".")


def _resolve_img_ids(
    img_ids: Sequence[int] | Literal["all", "predicted"],
    results: Sequence[Mapping[str, Any]],
    gt: COCO,
) -> list[int]:
    if isinstance(img_ids, str):
        if img_ids == "all":
            return sorted(gt.imgs)
        if img_ids == "predicted":
            ids = sorted({int(r["image_id"]) for r in results})
            if not ids:
                raise EvaluationError(
                    "img_ids='predicted' but there are no results, so no image to evaluate; "
                    "pass the ids of the images that were run instead."
                )
            return ids
        raise EvaluationError(
            f"img_ids must be 'all', 'predicted' or a list of ids, not {img_ids!r}."
        )
    ids = sorted({int(i) for i in img_ids})
    unknown = [i for i in ids if i not in gt.imgs]
    if unknown:
        raise EvaluationError(
            f"img_ids {_ids_text(unknown)} are not images of the ground truth; pass ids from it."
        )
    if not ids:
        raise EvaluationError("img_ids is empty; pass at least one ground-truth image id.")
    return ids


def _empty_detections(gt: COCO) -> COCO:
    """A results index with no detection (pycocotools' ``loadRes`` cannot load an empty list)."""
    dt = COCO()
    dt.dataset = {
        "images": list(gt.dataset["images"]),
        "categories": copy.deepcopy(gt.dataset["categories"]),
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def _detections(gt: COCO, results: Sequence[Mapping[str, Any]], iou_type: str) -> COCO:
    if not results:
        return _empty_detections(gt)
    drop = "segmentation" if iou_type == "bbox" else "bbox"
    anns = [{k: copy.deepcopy(v) for k, v in r.items() if k != drop} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes(anns)


def _percent(value: float) -> float:
    return float(value) * 100.0 if value >= 0 else float("nan")


def _mean_defined(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(values.mean()) * 100.0 if values.size else float("nan")


def _per_category_ap(coco_eval: COCOeval, gt: COCO) -> list[dict[str, Any]]:
    """AP (IoU 0.50:0.95) and AP50 (IoU 0.50) of each category (all areas, 100 detections), in
    percent: the mean of COCOeval's precision over its defined entries (as detectron2)."""
    precision = coco_eval.eval["precision"]  # (T IoUs, R recalls, K categories, A areas, M dets)
    rows = []
    for k, cat_id in enumerate(coco_eval.params.catIds):
        rows.append(
            {
                "category_id": int(cat_id),
                "name": str(gt.cats[cat_id]["name"]),
                "AP": _mean_defined(precision[:, :, k, 0, -1]),
                "AP50": _mean_defined(precision[0, :, k, 0, -1]),
            }
        )
    return rows


def evaluate_coco(
    gt: GroundTruth,
    results: Sequence[Mapping[str, Any]] | str | os.PathLike,
    iou_types: Sequence[str] = IOU_TYPES,
    *,
    img_ids: Sequence[int] | Literal["all", "predicted"] = "all",
    cat_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Box and / or mask AP of COCO results, by pycocotools' ``COCOeval``.

    Args:
        gt: ground truth: a pycocotools ``COCO``, checked annotations, or an instances JSON
            path (checked by ``load_coco_instances``).
        results: a list of result entries (see the module docstring) or a results JSON path.
        iou_types: any of "bbox", "segm".
        img_ids: the images scored: "all" of the ground truth, "predicted" (those with at least
            one result), or explicit ids (e.g. the images a partial run went through; images
            without results then count as having no detection).
        cat_ids: the categories scored (default all of the ground truth), e.g. the 65 of
            OV-COCO; results of other categories are ignored, as COCOeval does.

    Returns:
        ``{"num_images": int, "num_predictions": int, "iou_types": [...], <iou type>:
        {"AP": float, ..., "ARl": float, "per_category": [{"category_id", "name", "AP",
        "AP50"}]}}``,
        values in percent, NaN where undefined.

    Raises:
        EvaluationError: results name images or categories absent from the ground truth, or are
            malformed (see ``check_results``); ``img_ids`` names unknown images.

    Empty results are scored (every defined AP is 0), with a warning.
    """
    iou_types = list(iou_types)
    unknown_types = [t for t in iou_types if t not in IOU_TYPES]
    if unknown_types or not iou_types:
        raise EvaluationError(f"iou_types must be some of {IOU_TYPES}, got {iou_types}.")
    gt_coco = load_ground_truth(gt)
    if isinstance(results, (str, os.PathLike)):
        results = load_coco_results(results)
    results = list(results)
    check_results(results, gt_coco, iou_types)
    eval_ids = _resolve_img_ids(img_ids, results, gt_coco)
    if not results:
        warnings.warn(
            "No predictions to evaluate: every AP with ground truth is 0.",
            UserWarning,
            stacklevel=2,
        )
    metrics: dict[str, Any] = {
        "num_images": len(eval_ids),
        "num_predictions": len(results),
        "iou_types": iou_types,
    }
    for iou_type in iou_types:
        coco_eval = COCOeval(gt_coco, _detections(gt_coco, results, iou_type), iou_type)
        coco_eval.params.imgIds = eval_ids
        if cat_ids is not None:
            coco_eval.params.catIds = sorted({int(c) for c in cat_ids})
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        stats = {name: _percent(v) for name, v in zip(STAT_NAMES, coco_eval.stats)}
        metrics[iou_type] = {**stats, "per_category": _per_category_ap(coco_eval, gt_coco)}
    return metrics


def format_coco_table(metrics: Mapping[str, Any]) -> str:
    """The 12 standard numbers per IoU type, then each category's AP per IoU type.

    Example::

        COCO results (in %, 3 images, 10 predictions):
        +----------+--------+--------+ ... +--------+
        | IoU type |   AP   |  AP50  | ... |  ARl   |
        +----------+--------+--------+ ... +--------+
        |   bbox   | 100.00 | 100.00 | ... |  nan   |
        +----------+--------+--------+ ... +--------+
        per category AP:
        +------------+---------+---------+
        |  category  | bbox AP | segm AP |
        ...
    """
    iou_types = [t for t in metrics.get("iou_types", IOU_TYPES) if t in metrics]
    summary = render_table(
        ["IoU type", *STAT_NAMES],
        [[t, *(metrics[t][name] for name in STAT_NAMES)] for t in iou_types],
    )
    rows = []
    if iou_types:
        for index, row in enumerate(metrics[iou_types[0]]["per_category"]):
            rows.append(
                [row["name"], *(metrics[t]["per_category"][index]["AP"] for t in iou_types)]
            )
    per_category = render_table(["category", *(f"{t} AP" for t in iou_types)], rows)
    head = (
        f"COCO results (in %, {metrics.get('num_images', '?')} images, "
        f"{metrics.get('num_predictions', '?')} predictions):"
    )
    return "\n".join([head, summary, "per category AP:", per_category])


def coco_metrics_to_json(metrics: Mapping[str, Any], task: str = "instance_segmentation") -> dict:
    """The JSON document for ``evaluate_coco`` metrics: fixed key order, NaN as null.

    Layout: ``task, num_images, num_predictions, iou_types, metrics {<iou type>: {AP ... ARl}},
    per_category {<iou type>: [{category_id, name, AP}]}`` and, when present, ``groups
    {<iou type>: {<group>: mean per-category AP}}`` and ``groups_ap50`` (the same with AP50).
    """
    iou_types = [t for t in metrics["iou_types"] if t in metrics]
    return nan_to_none(
        {
            "task": task,
            "num_images": metrics["num_images"],
            "num_predictions": metrics["num_predictions"],
            "iou_types": iou_types,
            "metrics": {t: {n: metrics[t][n] for n in STAT_NAMES} for t in iou_types},
            "per_category": {t: metrics[t]["per_category"] for t in iou_types},
            **({"groups": metrics["groups"]} if "groups" in metrics else {}),
            **({"groups_ap50": metrics["groups_ap50"]} if "groups_ap50" in metrics else {}),
        }
    )


def write_coco_metrics(path: str | os.PathLike, metrics: Mapping[str, Any]) -> Path:
    """Write ``coco_metrics_to_json(metrics)`` as indented strict JSON, atomically."""
    return write_json_atomic(path, coco_metrics_to_json(metrics))
