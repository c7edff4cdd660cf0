"""Reasoning evaluator: gIoU / cIoU of a ``[SEG]``-token model's answers, overall and per split.

Datasets whose items carry ``queries`` (:class:`~ovseg.data.synthetic_reasoning.SyntheticReasoningDataset`,
:class:`~ovseg.data.reasonseg.ReasonSegDataset`) are scored query by query; RefCOCO-style items
(``expressions``, :class:`~ovseg.data.refcoco.RefCOCODataset`) are asked LISA's referring
question ``" What is {sentence} in this image? Please output segmentation mask."`` (sentence
stripped and lower-cased, as LISA's ``ValDataset``)::

    data:
      test: {type: SyntheticReasoningDataset, num: 200, seed: 1000, split: val,
             queries_per_scene: null}
    evaluation: {type: ReasoningMetric}

Rows: ``overall``, then each query group (``seen`` / ``unseen`` for the synthetic world) and
each query kind (``class``, ``relation``, ``attribute``, ``superlative``, ``count``; ReasonSeg:
``long`` / ``short``; RefCOCO: ``refer``) present. Metrics: :class:`ReasoningMetric`.

The pipeline (a config's ``pipelines.reasoning``) gets ``set_image(image)`` once per item and
``predict(question)`` per question of :meth:`ReasoningEvaluator.queries`; a prediction is an
``(H, W)`` mask, an ``(n, H, W)`` stack (one per ``[SEG]``, united; ``n = 0``: no ``[SEG]``),
an object with such a ``masks`` or ``mask`` attribute, or None (no ``[SEG]``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ovseg.errors import EvaluationError
from ovseg.evaluation.evaluator import DatasetEvaluator
from ovseg.evaluation.jsonio import nan_to_none
from ovseg.evaluation.reasoning import LISA_EPS, ReasoningMetric
from ovseg.evaluation.table import render_table
from ovseg.registry import EVALUATORS

REFER_QUESTION = " What is {} in this image? Please output segmentation mask."
ROW_ORDER = ("seen", "unseen", "class", "relation", "attribute", "superlative", "count",
             "long", "short", "refer")  # fmt: skip
COLUMNS = ("gIoU", "cIoU", "no_seg")


def prediction_mask(output: Any, shape: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """``((H, W) bool mask, no_seg)`` from one prediction (see the module docstring)."""
    for attribute in ("masks", "mask"):
        if hasattr(output, attribute) and not isinstance(output, np.ndarray):
            output = getattr(output, attribute)
            break
    if output is None:
        return np.zeros(shape, dtype=bool), True
    if hasattr(output, "detach"):
        output = output.detach().cpu().numpy()
    arr = np.asarray(output)
    if arr.ndim == 3:
        if len(arr) == 0:
            return np.zeros(shape, dtype=bool), True
        if arr.dtype != np.bool_ and not np.isin(np.unique(arr), (0, 1)).all():
            raise EvaluationError("predicted masks must hold 0/1 or bool values.")
        arr = arr.astype(bool).any(axis=0)
    return arr, False


def _query_records(inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "queries" in inputs:
        return list(inputs["queries"])
    if "expressions" in inputs:
        return [
            {
                "question": REFER_QUESTION.format(e["text"].strip().lower()),
                "masks": np.asarray(e["mask"], dtype=bool)[None],
                "ignore": None,
                "kind": "refer",
                "group": None,
            }
            for e in inputs["expressions"]
        ]
    raise EvaluationError(
        "A reasoning sample needs 'queries' (SyntheticReasoningDataset, ReasonSegDataset) or "
        "'expressions' (RefCOCODataset)."
    )


@EVALUATORS.register(aliases=("ReasoningMetric", "reasoning_iou"))
class ReasoningEvaluator(DatasetEvaluator):
    """gIoU / cIoU overall, per query group and per query kind (see the module docstring)."""

    task = "reasoning"

    def __init__(self, eps: float = LISA_EPS) -> None:
        self.eps = float(eps)
        self.reset()

    @classmethod
    def from_dataset(cls, dataset: Any, *, eps: float = LISA_EPS) -> ReasoningEvaluator:
        return cls(eps)

    def reset(self) -> None:
        self.num_images = 0
        self.overall = ReasoningMetric(self.eps)
        self.rows: dict[str, ReasoningMetric] = {}

    def queries(self, inputs: Mapping[str, Any]) -> list[str]:
        return [q["question"] for q in _query_records(inputs)]

    def _row(self, name: str) -> ReasoningMetric:
        if name not in self.rows:
            self.rows[name] = ReasoningMetric(self.eps)
        return self.rows[name]

    def process(self, inputs: Mapping[str, Any], outputs: Sequence[Any]) -> None:
        records = _query_records(inputs)
        if len(outputs) != len(records):
            raise EvaluationError(
                f"{len(outputs)} predictions for {len(records)} questions; answer every question "
                "of queries(inputs), in order."
            )
        for record, output in zip(records, outputs):
            target = np.asarray(record["masks"], dtype=bool)
            target = target.any(axis=0) if target.ndim == 3 else target
            pred, no_seg = prediction_mask(output, target.shape)
            ignore = record.get("ignore")
            self.overall.process(pred, target, ignore, no_seg=no_seg)
            for name in (record.get("group"), record.get("kind")):
                if name:
                    self._row(str(name)).process(pred, target, ignore, no_seg=no_seg)
        self.num_images += 1

    def state(self) -> dict[str, Any]:
        return {
            "num_images": self.num_images,
            "overall": self.overall.state(),
            "rows": {name: metric.state() for name, metric in self.rows.items()},
        }

    def merge(self, states: Sequence[Mapping[str, Any]]) -> None:
        self.reset()
        for state in states:
            self.num_images += int(state["num_images"])
            self.overall.merge(state["overall"])
            for name, row in state["rows"].items():
                self._row(name).merge(row)

    def _ordered_rows(self) -> list[str]:
        known = [name for name in ROW_ORDER if name in self.rows]
        return known + sorted(name for name in self.rows if name not in ROW_ORDER)

    def evaluate(self) -> dict[str, Any]:
        """``{"overall": metrics, "groups": {row: metrics}, "num_images": int}``; metrics is
        :meth:`ReasoningMetric.compute`'s dict (percent)."""
        return {
            "overall": self.overall.compute(),
            "groups": {name: self.rows[name].compute() for name in self._ordered_rows()},
            "num_images": self.num_images,
        }

    def format(self, results: Mapping[str, Any]) -> str:
        rows = [("overall", results["overall"]), *results["groups"].items()]
        body = [
            [name, *[metrics[c] for c in COLUMNS], str(metrics["num_samples"])]
            for name, metrics in rows
        ]
        return render_table(["split", *COLUMNS, "queries"], body)

    def documents(self, results: Mapping[str, Any]) -> dict[str, str]:
        return {"results.json": json.dumps(nan_to_none(dict(results)))}
