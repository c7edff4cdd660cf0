"""Referring evaluator: gIoU, cIoU and Pr@t on RefCOCO-style sentences or COCO class phrases.

A dataset whose samples carry ``expressions`` ([{text, mask}], e.g. :class:`RefCOCODataset`) is
scored on those sentences::

    _base_: sclip-vitb16
    data:
      test: {type: RefCOCODataset, root: data/refer, dataset: refcoco, split_by: unc, split: val}
    evaluation: {type: ReferringMetric}

Otherwise every image of a COCO instances dataset gives one sample per category it contains: the
phrase is the category name put into ``evaluation.phrase`` (default ``"{}"``), the target is the
union of that category's instance masks (crowd annotations left out). Samples go into
:class:`ReferringMetric` overall and per class group (``evaluation.groups``: ``{unseen: [...]}``
or a mapping of names), so unseen phrases are reported apart::

    _base_: shapes-tiny
    data:
      test: {type: COCOInstances, root: data/synth/coco, split: val}
    evaluation:
      type: ReferringMetric
      phrase: "{}"
      groups: {unseen: [red triangle, ...]}

The pipeline (a config's ``pipelines.referring``) embeds each image once (``set_image``) and
segments every phrase of :meth:`ReferringEvaluator.queries` (``predict``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ovseg.errors import ConfigError, EvaluationError
from ovseg.evaluation.evaluator import DatasetEvaluator
from ovseg.evaluation.groups import resolve_groups
from ovseg.evaluation.jsonio import nan_to_none
from ovseg.evaluation.referring import PRECISION_THRESHOLDS, ReferringMetric
from ovseg.evaluation.table import render_table
from ovseg.registry import EVALUATORS

METRIC_COLUMNS = ("gIoU", "cIoU", "Pr@0.5", "Pr@0.7", "Pr@0.9")


def phrases_and_targets(
    sample: Mapping[str, Any], class_names: list[str], category_ids: list[int], template: str
) -> list[tuple[str, str, np.ndarray]]:
    """``(class name, phrase, (H, W) bool target)`` for every category present in ``sample``.

    Crowd annotations are left out of the targets. Classes come in category-id order.
    """
    instances = sample["instances"]
    masks = np.asarray(instances["masks"], dtype=bool)
    crowd = np.asarray(instances.get("iscrowd", np.zeros(len(masks))), dtype=bool)
    present = np.asarray(instances["category_ids"])
    out = []
    for category_id in sorted(set(present[~crowd].tolist())):
        name = class_names[category_ids.index(int(category_id))]
        target = masks[(present == category_id) & ~crowd].any(axis=0)
        out.append((name, template.format(name), target))
    return out


def format_referring_table(results: Mapping[str, Any]) -> str:
    """Rows overall / per group, columns gIoU, cIoU, Pr@0.5/0.7/0.9 and the sample count."""
    rows = [("overall", results["overall"])] + list(results["groups"].items())
    header = ["split", *METRIC_COLUMNS, "samples"]
    body = [
        [name, *[metrics[c] for c in METRIC_COLUMNS], str(metrics["num_samples"])]
        for name, metrics in rows
    ]
    return render_table(header, body)


@EVALUATORS.register(aliases=("ReferringMetric", "referring_iou"))
class ReferringEvaluator(DatasetEvaluator):
    """Scores predicted masks of phrases against their targets, overall and per class group.

    Args:
        class_names, category_ids: the COCO classes (for phrases made from class names; empty
            for a dataset that brings its own ``expressions``).
        template: the phrase for a class, ``{}`` standing for its name.
        groups: named lists of class names, scored apart.
        thresholds, convention: of :class:`ReferringMetric`.

    ``process(inputs, outputs)``: ``outputs`` holds one prediction (a ``ReferringResult`` or an
    (H, W) bool mask) per phrase of ``queries(inputs)``, in that order.
    """

    task = "referring"

    def __init__(
        self,
        class_names: Sequence[str] = (),
        category_ids: Sequence[int] = (),
        template: str = "{}",
        groups: Mapping[str, Sequence[str]] | None = None,
        thresholds: Sequence[float] = PRECISION_THRESHOLDS,
        convention: str = "gres",
    ) -> None:
        if "{}" not in template:
            raise ConfigError(
                f"evaluation.phrase must contain '{{}}' for the class name: {template!r}"
            )
        self.class_names = list(class_names)
        self.category_ids = [int(c) for c in category_ids]
        self.template = template
        self.groups = {str(k): list(v) for k, v in (groups or {}).items()}
        self.group_of = {c: g for g, members in self.groups.items() for c in members}
        self.overall = ReferringMetric(thresholds, convention)
        self.by_group = {name: ReferringMetric(thresholds, convention) for name in self.groups}
        self.reset()

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        *,
        phrase: str = "{}",
        groups: Any = None,
        thresholds: Sequence[float] = PRECISION_THRESHOLDS,
        convention: str = "gres",
    ) -> ReferringEvaluator:
        """Sentences of a referring dataset, or one phrase per class of a COCO dataset."""
        if hasattr(dataset, "refs"):  # a referring dataset brings its own sentences
            return cls(template=str(phrase), thresholds=thresholds, convention=convention)
        for attribute in ("class_names", "category_ids"):
            if not hasattr(dataset, attribute):
                raise ConfigError(
                    f"data.test ({type(dataset).__name__}) has no {attribute!r}; referring "
                    "evaluation needs RefCOCODataset or a COCO instances dataset (COCOInstances)."
                )
        class_names = list(dataset.class_names)
        return cls(
            class_names,
            list(dataset.category_ids),
            str(phrase),
            resolve_groups(groups, dataset, class_names),
            thresholds,
            convention,
        )

    def reset(self) -> None:
        self.num_images = 0
        for metric in (self.overall, *self.by_group.values()):
            metric.reset()

    def samples(self, inputs: Mapping[str, Any]) -> list[tuple[str | None, str, np.ndarray]]:
        """``(class name or None, phrase, (H, W) bool target)`` of one dataset sample."""
        if "expressions" in inputs:
            return [
                (None, e["text"], np.asarray(e["mask"], dtype=bool)) for e in inputs["expressions"]
            ]
        return phrases_and_targets(inputs, self.class_names, self.category_ids, self.template)

    def queries(self, inputs: Mapping[str, Any]) -> list[str]:
        return [phrase for _, phrase, _ in self.samples(inputs)]

    def process(self, inputs: Mapping[str, Any], outputs: Sequence[Any]) -> None:
        samples = self.samples(inputs)
        if len(outputs) != len(samples):
            raise EvaluationError(
                f"{len(outputs)} predictions for {len(samples)} phrases; predict every phrase "
                "of queries(inputs), in order."
            )
        for (name, _, target), predicted in zip(samples, outputs):
            predicted = getattr(predicted, "mask", predicted)
            self.overall.process(predicted, target)
            if name in self.group_of:
                self.by_group[self.group_of[name]].process(predicted, target)
        self.num_images += 1

    def state(self) -> dict[str, Any]:
        return {
            "num_images": self.num_images,
            "overall": self.overall.state(),
            "groups": {name: metric.state() for name, metric in self.by_group.items()},
        }

    def merge(self, states: Sequence[Mapping[str, Any]]) -> None:
        self.reset()
        for state in states:
            self.num_images += int(state["num_images"])
            self.overall.merge(state["overall"])
            for name, metric in self.by_group.items():
                metric.merge(state["groups"][name])

    def evaluate(self) -> dict[str, Any]:
        """``{"overall": metrics, "groups": {name: metrics}, "num_images": int}``; metrics is
        :meth:`ReferringMetric.compute`'s dict (percent)."""
        return {
            "overall": self.overall.compute(),
            "groups": {name: metric.compute() for name, metric in self.by_group.items()},
            "num_images": self.num_images,
        }

    def format(self, results: Mapping[str, Any]) -> str:
        return format_referring_table(results)

    def documents(self, results: Mapping[str, Any]) -> dict[str, str]:
        return {"results.json": json.dumps(nan_to_none(dict(results)))}
