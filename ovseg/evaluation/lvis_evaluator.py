"""LVIS box and mask AP (AP, AP50, AP75, APs/m/l, AP_r / AP_c / AP_f) by the official ``lvis``
package (``LVISResults`` with at most 300 detections per image, ``LVISEval``).

As detectron2's LVIS evaluator, mask results are scored without their ``bbox`` (else the
``lvis`` package takes the box area as the instance area for the small / medium / large ranges)
and box results without masks. Numbers are in percent; one the package leaves undefined (-1)
is NaN here and null in JSON.

``lvis`` 0.5.3 (the latest release) still calls ``np.float``, which numpy 1.24 removed; while
it runs, :func:`_numpy_float_alias` restores that alias as the builtin ``float`` (what it always
meant), and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.errors import ConfigError, EvaluationError, MissingDependencyError
from ovseg.evaluation.coco import masks_to_rles
from ovseg.evaluation.detection_evaluator import PIPELINE_TASKS, boxes_to_coco_results
from ovseg.evaluation.evaluator import DatasetEvaluator, PerImageCocoResults
from ovseg.evaluation.jsonio import dumps_indented, nan_to_none
from ovseg.evaluation.table import render_table
from ovseg.registry import EVALUATORS
from ovseg.structures import Instances

__all__ = ["LVIS_STATS", "LVISEvaluator", "evaluate_lvis"]

LVIS_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
IOU_TYPES = ("bbox", "segm")
MAX_DETS = 300


@contextlib.contextmanager
def _numpy_float_alias() -> Iterator[None]:
    added = "float" not in np.__dict__
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float  # type: ignore[attr-defined]


def _lvis():
    try:
        import lvis
    except ImportError as exc:
        raise MissingDependencyError(
            "LVIS evaluation needs the lvis package: pip install 'ovseg[detection]' (or pip install "
            "lvis)."
        ) from exc
    return lvis


def _for_iou_type(results: Sequence[Mapping[str, Any]], iou_type: str) -> list[dict[str, Any]]:
    drop = "segmentation" if iou_type == "bbox" else "bbox"
    return [{k: copy.deepcopy(v) for k, v in r.items() if k != drop} for r in results]


def evaluate_lvis(
    ann_file: str | os.PathLike,
    results: Sequence[Mapping[str, Any]],
    iou_types: Sequence[str] = ("bbox",),
    img_ids: Sequence[int] | None = None,
    max_dets: int = MAX_DETS,
) -> dict[str, Any]:
    """The LVIS metrics of COCO-style ``results`` against ``ann_file``, per IoU type.

    Returns:
        ``{"num_images", "num_predictions", "iou_types", <iou type>: {AP ... APf}}`` in percent.

    Raises:
        EvaluationError: no result (the ``lvis`` package cannot score an empty list), or an
            IoU type other than bbox / segm.
    """
    bad = [t for t in iou_types if t not in IOU_TYPES]
    if bad or not iou_types:
        raise EvaluationError(f"iou_types must be some of {IOU_TYPES}, got {list(iou_types)}.")
    if not results:
        raise EvaluationError(
            "No detection to evaluate: the lvis package cannot score an empty result list "
            "(every AP would be 0)."
        )
    lvis = _lvis()
    quiet = logging.getLogger("lvis")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with (
            _numpy_float_alias(),
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", DeprecationWarning)  # the package's logger.warn
            gt = lvis.LVIS(str(ann_file))
            ids = sorted(gt.imgs) if img_ids is None else sorted({int(i) for i in img_ids})
            metrics: dict[str, Any] = {
                "num_images": len(ids),
                "num_predictions": len(results),
                "iou_types": list(iou_types),
            }
            for iou_type in iou_types:
                dt = lvis.LVISResults(gt, _for_iou_type(results, iou_type), max_dets=max_dets)
                evaluation = lvis.LVISEval(gt, dt, iou_type)
                evaluation.params.img_ids = ids
                evaluation.run()
                values = evaluation.get_results()
                metrics[iou_type] = {
                    name: float(values[name]) * 100.0 if values[name] >= 0 else float("nan")
                    for name in LVIS_STATS
                }
    finally:
        quiet.setLevel(level)
    return metrics


@EVALUATORS.register(aliases=("lvis_ap",))
class LVISEvaluator(PerImageCocoResults, DatasetEvaluator):
    """Collects predictions as LVIS (COCO-style) results; scores them with the ``lvis`` package.

    Args:
        ann_file: the LVIS JSON (``lvis_v1_val.json``).
        category_ids: LVIS category id of each label index (the dataset's, sorted).
        iou_types: ``bbox`` and / or ``segm`` (``segm`` needs ``pipeline: instance``).
        pipeline: ``detection`` (``Detections``) or ``instance`` (``Instances``).
    """

    task = "detection"

    def __init__(
        self,
        ann_file: str | os.PathLike,
        category_ids: Sequence[int],
        iou_types: Sequence[str] = ("bbox",),
        pipeline: str = "detection",
    ) -> None:
        if pipeline not in PIPELINE_TASKS:
            raise ConfigError(
                f"evaluation.pipeline must be one of {PIPELINE_TASKS}, not {pipeline!r}."
            )
        self.iou_types = [iou_types] if isinstance(iou_types, str) else list(iou_types)
        if any(t not in IOU_TYPES for t in self.iou_types) or not self.iou_types:
            raise ConfigError(f"iou_types must be some of {IOU_TYPES}, got {self.iou_types}.")
        if "segm" in self.iou_types and pipeline != "instance":
            raise ConfigError("iou_types segm needs masks: set evaluation.pipeline: instance.")
        self.task = pipeline  # type: ignore[misc]
        self.ann_file = Path(ann_file)
        self.category_ids = [int(c) for c in category_ids]
        self.reset()

    @classmethod
    def from_dataset(
        cls, dataset: Any, *, iou_types: Sequence[str] = ("bbox",), pipeline: str = "detection"
    ) -> LVISEvaluator:
        for attribute in ("ann_file", "category_ids", "vocabulary"):
            if not hasattr(dataset, attribute):
                raise ConfigError(
                    f"data.test ({type(dataset).__name__}) has no {attribute!r}; LVIS evaluation "
                    "needs LVISInstances."
                )
        evaluator = cls(dataset.ann_file, dataset.category_ids, iou_types, pipeline)
        evaluator.vocabulary = list(dataset.vocabulary)
        return evaluator

    def reset(self) -> None:
        self._per_image: list[tuple[int, list[dict[str, Any]]]] = []

    def process(self, inputs: Mapping[str, Any], outputs: Any) -> None:
        image_id = int(inputs["image_id"])
        if len(outputs.class_names) != len(self.category_ids):
            raise EvaluationError(
                f"The predictions name {len(outputs.class_names)} classes but LVIS has "
                f"{len(self.category_ids)} categories; predict with the dataset's vocabulary."
            )
        results = boxes_to_coco_results(
            outputs.boxes, outputs.scores, outputs.labels, image_id, self.category_ids
        )
        if "segm" in self.iou_types:
            if not isinstance(outputs, Instances):
                raise TypeError("Mask AP needs Instances (set evaluation.pipeline: instance).")
            for entry, rle in zip(results, masks_to_rles(outputs.masks), strict=True):
                entry["segmentation"] = rle
        self._per_image.append((image_id, results))

    def evaluate(self) -> dict[str, Any]:
        ids = [image_id for image_id, _ in self._per_image]
        if not ids:
            raise EvaluationError("No image was processed, so there is nothing to evaluate.")
        if len(set(ids)) != len(ids):
            raise EvaluationError("Images were processed more than once; give each image once.")
        return evaluate_lvis(self.ann_file, self.results(), self.iou_types, self.image_ids)

    def format(self, results: Mapping[str, Any]) -> str:
        types = [t for t in results["iou_types"] if t in results]
        table = render_table(
            ["IoU type", *LVIS_STATS], [[t, *(results[t][n] for n in LVIS_STATS)] for t in types]
        )
        return (
            f"LVIS results (in %, {results['num_images']} images, "
            f"{results['num_predictions']} predictions):\n{table}"
        )

    def documents(self, results: Mapping[str, Any]) -> dict[str, str]:
        body = nan_to_none({"task": "lvis", **dict(results)})
        return {
            "results.json": dumps_indented(body),
            "lvis_results.json": json.dumps(self.results(), allow_nan=False),
        }
