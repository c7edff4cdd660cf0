"""Referring expression comprehension: Acc@0.5 on RefCOCO / RefCOCO+ / RefCOCOg.

Each expression of a :class:`~ovseg.data.refcoco.RefCOCODataset` sample (``expressions``:
``[{text, box}]``, ``box`` the referred object's XYXY box) is given to the detection pipeline as
a one-class vocabulary; the prediction is its top-1 box (the highest score; the pipeline is
called with ``box_threshold=0``, no NMS and ``max_detections=1``, so every expression gets a
box when the detector proposes any). An expression counts as correct when that box has IoU >=
0.5 with the target box (IoU of continuous XYXY boxes, ``x2 = x + w``, as MDETR's and Grounding
DINO's evaluations compute it); an expression without prediction counts as wrong. ``.``, Grounding
DINO's phrase separator, is replaced by a space in the expressions (the other characters stay)::

    _base_: grounding-dino-t-sam-vith
    data:
      test: {type: RefCOCODataset, root: data/refer, dataset: refcocog, split_by: umd, split: val}
    evaluation: {type: RECEvaluator}

Expressions whose ref names no single object (gRefCOCO's) cannot be scored and are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ovseg.errors import ConfigError, EvaluationError
from ovseg.evaluation.evaluator import DatasetEvaluator
from ovseg.evaluation.table import render_table
from ovseg.models.classifiers.nms import box_iou
from ovseg.registry import EVALUATORS

__all__ = ["RECEvaluator", "top1_correct"]


def top1_correct(prediction: Any, target: np.ndarray, threshold: float = 0.5) -> bool:
    """Whether the best box of ``prediction`` (``Detections``, best first) has IoU >=
    ``threshold`` with ``target`` ``(4,)`` XYXY."""
    if prediction is None or len(prediction) == 0:
        return False
    best = int(np.argmax(prediction.scores))
    iou = float(box_iou(prediction.boxes[best : best + 1], np.asarray(target)[None])[0, 0])
    return iou >= threshold


def clean_phrase(text: str) -> str:
    """``text`` with ``.`` replaced by spaces and whitespace collapsed."""
    return " ".join(text.replace(".", " ").split())


@EVALUATORS.register(aliases=("rec_accuracy",))
class RECEvaluator(DatasetEvaluator):
    """Acc@``iou_threshold`` (default 0.5) of top-1 boxes of referring expressions."""

    task = "grounding"
    predict_settings: ClassVar[dict[str, Any]] = {
        "box_threshold": 0.0,
        "score_threshold": None,
        "nms_threshold": None,
        "max_detections": 1,
    }

    def __init__(self, iou_threshold: float = 0.5, name: str = "") -> None:
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ConfigError(f"iou_threshold must lie in (0, 1], got {iou_threshold}.")
        self.iou_threshold = float(iou_threshold)
        self.name = name
        self.reset()

    @classmethod
    def from_dataset(cls, dataset: Any, *, iou_threshold: float = 0.5) -> RECEvaluator:
        name = f"{getattr(dataset, 'name', '')} {getattr(dataset, 'split', '')}".strip()
        return cls(iou_threshold, name)

    def reset(self) -> None:
        self._correct: list[tuple[Any, int, int]] = []  # (sample key, correct, total)

    def queries(self, inputs: Mapping[str, Any]) -> list[str]:
        return [clean_phrase(e["text"]) for e in inputs["expressions"]]

    def process(self, inputs: Mapping[str, Any], outputs: Any) -> None:
        expressions = inputs["expressions"]
        if len(outputs) != len(expressions):
            raise EvaluationError(f"{len(outputs)} predictions for {len(expressions)} expressions.")
        correct = 0
        for expression, prediction in zip(expressions, outputs, strict=True):
            target = expression.get("box")
            if target is None:
                raise EvaluationError(
                    f"Expression {expression['text']!r} names no single object (no box); REC "
                    "needs RefCOCO, RefCOCO+ or RefCOCOg."
                )
            correct += top1_correct(prediction, target, self.iou_threshold)
        key = (inputs.get("ref_id"), inputs.get("image_id"))
        self._correct.append((key, correct, len(expressions)))

    def state(self) -> list[tuple[Any, int, int]]:
        return list(self._correct)

    def merge(self, states: Sequence[list[tuple[Any, int, int]]]) -> None:
        self._correct = [item for state in states for item in state]

    def evaluate(self) -> dict[str, Any]:
        total = sum(count for _, _, count in self._correct)
        if total == 0:
            raise EvaluationError("No expression was processed, so there is nothing to evaluate.")
        correct = sum(right for _, right, _ in self._correct)
        key = f"Acc@{self.iou_threshold:g}"
        return {
            "task": "referring_expression_comprehension",
            "dataset": self.name,
            key: 100.0 * correct / total,
            "correct": correct,
            "num_expressions": total,
        }

    def format(self, results: Mapping[str, Any]) -> str:
        key = f"Acc@{self.iou_threshold:g}"
        return render_table(
            ["dataset", f"{key} (%)", "expressions"],
            [[results["dataset"] or "-", results[key], str(results["num_expressions"])]],
        )

    def documents(self, results: Mapping[str, Any]) -> dict[str, str]:
        return {"results.json": json.dumps(dict(results), indent=2) + "\n"}
