"""Box AP of detections (COCO) and the OV-COCO protocol (novel / base / all AP50).

``CocoDetectionEvaluator`` scores the boxes of a detection pipeline (``Detections``) or of an
instance pipeline (``Instances``, ``pipeline: instance``; masks too with ``iou_types: [bbox,
segm]``) with pycocotools' ``COCOeval`` (:func:`ovseg.evaluation.coco.evaluate_coco`).

``OVCocoEvaluator`` is the open-vocabulary COCO protocol of Bansal et al. (zero-shot detection)
as OVR-CNN, ViLD and Detic evaluate it: 48 base and 17 novel categories of COCO 2017
(:data:`OV_COCO_BASE_IDS`, :data:`OV_COCO_NOVEL_IDS`, the lists of Detic's
``coco_zeroshot.py``); the vocabulary is the 65 names, COCOeval runs over those 65 categories
(``instances_val2017_all_2_oriorder.json`` holds only them; with the full
``instances_val2017.json`` the other 15 are left out of the evaluation), and the numbers are
box AP50 of all 65 (COCOeval's AP50) and the mean per-category AP50 (precision at IoU 0.5, all
areas, 100 detections) over the novel and over the base categories, as Detic's
``CustomCOCOEvaluator``; a category with no ground truth among the evaluated images is left
out of its group's mean (Detic's mean would be NaN).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ovseg.errors import ConfigError, EvaluationError
from ovseg.evaluation.coco import coco_metrics_to_json, evaluate_coco
from ovseg.evaluation.instance_evaluator import CocoInstanceEvaluator
from ovseg.evaluation.jsonio import dumps_indented, nan_to_none
from ovseg.registry import EVALUATORS
from ovseg.structures import Detections

__all__ = [
    "OV_COCO_BASE_IDS",
    "OV_COCO_NOVEL_IDS",
    "CocoDetectionEvaluator",
    "OVCocoEvaluator",
    "boxes_to_coco_results",
    "ov_coco_summary",
]

#: the 48 base (seen) categories of OV-COCO, by COCO category id
OV_COCO_BASE_IDS = (
    1, 2, 3, 4, 7, 8, 9, 15, 16, 19, 20, 23, 24, 25, 27, 31, 33, 34, 35, 38, 42, 44, 48, 50,
    51, 52, 53, 54, 55, 56, 57, 59, 60, 62, 65, 70, 72, 73, 74, 75, 78, 79, 80, 82, 84, 85, 86, 90,
)  # fmt: skip
#: the 17 novel (unseen) categories of OV-COCO, by COCO category id
OV_COCO_NOVEL_IDS = (5, 6, 17, 18, 21, 22, 28, 32, 36, 41, 47, 49, 61, 63, 76, 81, 87)
PIPELINE_TASKS = ("detection", "instance")


def boxes_to_coco_results(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    image_id: int,
    category_ids: Sequence[int],
) -> list[dict[str, Any]]:
    """XYXY boxes (image pixels) as COCO result entries ``{image_id, category_id, bbox [x, y, w,
    h], score}``, in the given order; ``labels`` index ``category_ids``.

    Raises:
        EvaluationError: a label has no category id.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(category_ids)):
        raise EvaluationError(
            f"Detections of image {image_id} have labels outside the {len(category_ids)} "
            "categories; predict with the dataset's class list as vocabulary."
        )
    return [
        {
            "image_id": int(image_id),
            "category_id": int(category_ids[label]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": score,
        }
        for (x1, y1, x2, y2), score, label in zip(
            np.asarray(boxes, dtype=np.float64).reshape(-1, 4).tolist(),
            np.asarray(scores, dtype=np.float64).reshape(-1).tolist(),
            labels.tolist(),
            strict=True,
        )
    ]


@EVALUATORS.register(aliases=("coco_box_ap",))
class CocoDetectionEvaluator(CocoInstanceEvaluator):
    """COCO box AP of ``Detections`` (or of ``Instances`` with ``pipeline: instance``).

    Args (besides :class:`CocoInstanceEvaluator`'s): ``pipeline``: ``detection`` (default) or
    ``instance``, the pipeline whose predictions are scored; ``iou_types`` default ``[bbox]``
    (``segm`` needs ``pipeline: instance``).
    """

    task = "detection"

    def __init__(
        self,
        gt: Any,
        category_ids: Sequence[int] | None = None,
        iou_types: Sequence[str] = ("bbox",),
        groups: Mapping[str, Sequence[str]] | None = None,
        pipeline: str = "detection",
    ) -> None:
        if pipeline not in PIPELINE_TASKS:
            raise ConfigError(
                f"evaluation.pipeline must be one of {PIPELINE_TASKS}, not {pipeline!r}."
            )
        super().__init__(gt, category_ids, iou_types, groups)
        if "segm" in self.iou_types and pipeline != "instance":
            raise ConfigError("iou_types segm needs masks: set evaluation.pipeline: instance.")
        self.task = pipeline  # type: ignore[misc]

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        *,
        iou_types: Sequence[str] = ("bbox",),
        groups: Any = None,
        pipeline: str = "detection",
    ) -> CocoDetectionEvaluator:
        return super().from_dataset(dataset, iou_types=iou_types, groups=groups, pipeline=pipeline)

    def process(self, inputs: Mapping[str, Any], outputs: Any) -> None:
        """Add one image's ``Detections`` (or ``Instances``)."""
        if not isinstance(outputs, Detections):
            super().process(inputs, outputs)
            return
        image_id = int(inputs["image_id"])
        if image_id not in self.gt.imgs:
            raise EvaluationError(
                f"image id {image_id} is not in the ground truth; evaluate against the "
                "annotation file of the images that were predicted."
            )
        if len(outputs.class_names) != len(self.category_ids):
            raise EvaluationError(
                f"The detections name {len(outputs.class_names)} classes but there are "
                f"{len(self.category_ids)} categories; predict with the dataset's class_names "
                "as vocabulary, in order."
            )
        results = boxes_to_coco_results(
            outputs.boxes, outputs.scores, outputs.labels, image_id, self.category_ids
        )
        self._per_image.append((image_id, results))

    def documents(self, results: Mapping[str, Any]) -> dict[str, str]:
        body = coco_metrics_to_json(results, task=f"{self.task}_boxes")
        if "ov_coco" in results:
            body["ov_coco"] = nan_to_none(results["ov_coco"])
        return {
            "results.json": dumps_indented(body),
            "coco_results.json": json.dumps(self.results(), allow_nan=False),
        }


def ov_coco_summary(metrics: Mapping[str, Any], iou_type: str = "bbox") -> dict[str, float]:
    """``{"novel", "base", "all"}`` AP50 (percent) of :func:`evaluate_coco` metrics over the 65
    OV-COCO categories (see the module docstring)."""
    rows = {row["category_id"]: row["AP50"] for row in metrics[iou_type]["per_category"]}

    def mean(ids: Sequence[int]) -> float:
        values = [rows[i] for i in ids if i in rows and not np.isnan(rows[i])]
        return float(np.mean(values)) if values else float("nan")

    return {
        "novel": mean(OV_COCO_NOVEL_IDS),
        "base": mean(OV_COCO_BASE_IDS),
        "all": float(metrics[iou_type]["AP50"]),
    }


@EVALUATORS.register(aliases=("ov_coco",))
class OVCocoEvaluator(CocoDetectionEvaluator):
    """OV-COCO: AP50 on the 17 novel, the 48 base and all 65 categories (module docstring).

    The dataset (``COCOInstances`` of ``instances_val2017_all_2_oriorder.json`` or of the full
    ``instances_val2017.json``) must have the 65 categories; the vocabulary is their names in id
    order.
    """

    def __init__(
        self,
        gt: Any,
        iou_types: Sequence[str] = ("bbox",),
        pipeline: str = "detection",
    ) -> None:
        ids = sorted(OV_COCO_BASE_IDS + OV_COCO_NOVEL_IDS)
        super().__init__(gt, ids, iou_types, None, pipeline)

    @classmethod
    def from_dataset(
        cls, dataset: Any, *, iou_types: Sequence[str] = ("bbox",), pipeline: str = "detection"
    ) -> OVCocoEvaluator:
        if not hasattr(dataset, "coco"):
            raise ConfigError(
                f"data.test ({type(dataset).__name__}) is not a COCO dataset; OV-COCO needs "
                "COCOInstances of the COCO 2017 val annotations."
            )
        missing = sorted(set(OV_COCO_BASE_IDS + OV_COCO_NOVEL_IDS) - set(dataset.coco.cats))
        if missing:
            raise EvaluationError(
                f"The annotations lack OV-COCO categories {missing[:5]}; use "
                "instances_val2017_all_2_oriorder.json (65 categories) or instances_val2017.json."
            )
        return cls(dataset.coco, iou_types, pipeline)

    def evaluate(self) -> dict[str, Any]:
        ids = [image_id for image_id, _ in self._per_image]
        if not ids:
            raise EvaluationError("No image was processed, so there is nothing to evaluate.")
        if len(set(ids)) != len(ids):
            raise EvaluationError("Images were processed more than once; give each image once.")
        metrics = evaluate_coco(
            self.gt,
            self.results(),
            self.iou_types,
            img_ids=self.image_ids,
            cat_ids=self.category_ids,
        )
        metrics["ov_coco"] = {t: ov_coco_summary(metrics, t) for t in self.iou_types}
        return metrics

    def format(self, results: Mapping[str, Any]) -> str:
        lines = [super().format(results)]
        for iou_type, summary in results.get("ov_coco", {}).items():
            lines.append(
                f"OV-COCO {iou_type} AP50: novel {summary['novel']:.2f}, base "
                f"{summary['base']:.2f}, all {summary['all']:.2f}"
            )
        return "\n".join(lines)
