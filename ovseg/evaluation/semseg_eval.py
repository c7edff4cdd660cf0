"""Run a semantic-segmentation predictor over a dataset, on one process or under torchrun.

Under torch.distributed each rank evaluates the indices ``rank, rank + world_size, ...``; the
int64 counts are summed with one all-reduce, so every rank ends with exactly the numbers a single
process would get. Only rank 0 shows progress, prints the tables and writes the JSON file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from tqdm import tqdm

from ovseg.evaluation.semseg import COUNT_KEYS, SemSegMetric
from ovseg.evaluation.table import format_table
from ovseg.fileio import atomic_write_text


def _dist_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _json_float(value: Any) -> float | None:
    """A float for JSON; NaN (undefined metric) becomes null so the file stays strict JSON."""
    number = float(value)
    return None if math.isnan(number) else number


def results_to_json(results: dict[str, Any], metric: SemSegMetric) -> dict[str, Any]:
    """The JSON document for ``metric.compute()`` results: a fixed key order, no timestamps.

    Layout: ``task, num_images, num_classes, ignore_index, metrics {aAcc, mIoU, mAcc},
    groups {name: {classes, mIoU, mAcc}}, per_class [{class, IoU, Acc}], counts {intersect,
    union, pred_area, label_area}``. Metrics are percentages, undefined ones are null.
    """
    members = metric.group_classes()
    state = metric.state()
    return {
        "task": "semantic_segmentation",
        "num_images": int(results["num_images"]),
        "num_classes": metric.num_classes,
        "ignore_index": metric.ignore_index,
        "metrics": {k: _json_float(results[k]) for k in ("aAcc", "mIoU", "mAcc")},
        "groups": {
            name: {
                "classes": members[name],
                "mIoU": _json_float(g["mIoU"]),
                "mAcc": _json_float(g["mAcc"]),
            }
            for name, g in results["groups"].items()
        },
        "per_class": [
            {"class": name, "IoU": _json_float(i), "Acc": _json_float(a)}
            for name, i, a in zip(metric.class_names, results["IoU"], results["Acc"])
        ],
        "counts": {k: [int(v) for v in state[k]] for k in COUNT_KEYS},
    }


def write_json_atomic(path: str | Path, document: Any) -> Path:
    """Write ``document`` as indented strict JSON to ``path`` atomically (NaN is refused)."""
    return atomic_write_text(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


def evaluate_semantic(
    predict: Callable[[np.ndarray], Any],
    dataset: Sequence[dict[str, Any]],
    metric: SemSegMetric,
    *,
    out_json: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``predict`` on every item of ``dataset`` and return ``metric.compute()``.

    Args:
        predict: maps ``sample["image"]`` (H, W, 3) uint8 RGB to (H, W) integer class indices
            (numpy array or torch tensor) of the label's size. It runs as given (no
            ``torch.no_grad`` is added here).
        dataset: indexable, sized; item ``i`` is a dict with "image" ((H, W, 3) uint8),
            "label" ((H, W) integer, ``metric.ignore_index`` = not evaluated) and "filename".
        metric: where counts accumulate; it is reset first.
        out_json: where rank 0 writes the results (see ``results_to_json``), atomically.
        progress: show a tqdm bar (rank 0 only).

    Returns:
        The ``SemSegMetric.compute()`` dict; identical on every rank.

    Raises:
        ValueError: a prediction's shape differs from its label's (the message names the file).
    """
    rank, world_size = _dist_info()
    metric.reset()
    indices = range(rank, len(dataset), world_size)
    bar = tqdm(indices, desc="eval", unit="img", disable=not progress or rank != 0)
    for index in bar:
        sample = dataset[index]
        pred = predict(sample["image"])
        try:
            metric.process(pred, sample["label"])
        except (ValueError, TypeError) as exc:
            name = sample.get("filename", f"item {index}")
            raise type(exc)(f"{name}: {exc}") from exc
    bar.close()

    metric.all_reduce()
    results = metric.compute()
    if rank == 0:
        print(format_table(results, metric.class_names), flush=True)
        if out_json is not None:
            write_json_atomic(out_json, results_to_json(results, metric))
    return results
