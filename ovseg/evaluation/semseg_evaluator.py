"""Semantic segmentation evaluator: mIoU / mAcc / aAcc over the dataset (the default one).

Settings (the config's ``evaluation`` section)::

    evaluation:
      groups: auto        # seen / unseen from the dataset's split file, or {name: [classes]}
      ignore_index: 255   # default: the dataset's ignore_index (65535 for the 459 / 847 sets)

Counts are int64 and summed over processes, so a sharded run equals a one-process run exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ovseg.errors import ConfigError
from ovseg.evaluation.evaluator import DatasetEvaluator
from ovseg.evaluation.groups import resolve_groups
from ovseg.evaluation.jsonio import dumps_indented, json_float
from ovseg.evaluation.semseg import COUNT_KEYS, SemSegMetric
from ovseg.evaluation.table import format_table
from ovseg.registry import EVALUATORS


def results_to_json(results: Mapping[str, Any], metric: SemSegMetric) -> dict[str, Any]:
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
        "metrics": {k: json_float(results[k]) for k in ("aAcc", "mIoU", "mAcc")},
        "groups": {
            name: {
                "classes": members[name],
                "mIoU": json_float(g["mIoU"]),
                "mAcc": json_float(g["mAcc"]),
            }
            for name, g in results["groups"].items()
        },
        "per_class": [
            {"class": name, "IoU": json_float(i), "Acc": json_float(a)}
            for name, i, a in zip(metric.class_names, results["IoU"], results["Acc"])
        ],
        "counts": {k: [int(v) for v in state[k]] for k in COUNT_KEYS},
    }


@EVALUATORS.register(aliases=("SemSegMetric", "semseg_miou"))
class SemSegEvaluator(DatasetEvaluator):
    """Scores (H, W) class-index predictions against ``inputs["label"]`` with :class:`SemSegMetric`.

    Args:
        class_names: the C classes; label value ``i`` is ``class_names[i]``.
        ignore_index: label value left out of the evaluation.
        groups: optional named subsets of the classes (e.g. seen / unseen), reported apart.
        pipeline: the pipeline scored: ``semantic`` (the config's ``pipeline`` section, the
            default) or the name of a ``pipelines.<name>`` section giving ``OVSegResult`` s
            (e.g. ``semantic_painted``).

    ``process(inputs, outputs)``: ``inputs`` holds "label" ((H, W) integer); ``outputs`` is the
    pipeline's result (its ``sem_seg``) or the (H, W) index map itself (numpy or torch).
    """

    task = "semantic"

    def __init__(
        self,
        class_names: Sequence[str],
        ignore_index: int = 255,
        groups: Mapping[str, Sequence[str]] | None = None,
        pipeline: str = "semantic",
    ) -> None:
        if not isinstance(pipeline, str) or not pipeline:
            raise ConfigError(
                f"evaluation.pipeline must name a pipeline section (semantic, or a pipelines.<name> "
                f"key), not {pipeline!r}."
            )
        self.metric = SemSegMetric(len(class_names), class_names, ignore_index, groups)
        self.vocabulary = list(self.metric.class_names)
        self.pipeline_key = None if pipeline == "semantic" else pipeline

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        *,
        groups: Any = "auto",
        ignore_index: int | None = None,
        pipeline: str = "semantic",
    ) -> SemSegEvaluator:
        """Classes and ``ignore_index`` from the dataset; ``groups`` as :func:`resolve_groups`."""
        class_names = list(dataset.class_names)
        if ignore_index is None:
            ignore_index = getattr(dataset, "ignore_index", 255)
        return cls(
            class_names,
            int(ignore_index),
            resolve_groups(groups, dataset, class_names),
            pipeline=pipeline,
        )

    def reset(self) -> None:
        self.metric.reset()

    def process(self, inputs: Mapping[str, Any], outputs: Any) -> None:
        pred = getattr(outputs, "sem_seg", outputs)
        self.metric.process(pred, inputs["label"])

    def state(self) -> dict[str, Any]:
        return self.metric.state()

    def merge(self, states: Sequence[Mapping[str, Any]]) -> None:
        self.metric.reset()
        for state in states:
            self.metric.merge(state)

    def evaluate(self) -> dict[str, Any]:
        """:meth:`SemSegMetric.compute`'s dict (percent; per-class arrays NaN where undefined)."""
        return self.metric.compute()

    def check_pipeline(self, pipeline: Any) -> None:
        vocabulary = getattr(pipeline, "vocabulary", None)
        if vocabulary is not None and len(vocabulary) != self.metric.num_classes:
            raise ConfigError(
                f"The vocabulary has {len(vocabulary)} classes but the dataset "
                f"{self.metric.num_classes}; the label indices must match the vocabulary order."
            )

    def format(self, results: Mapping[str, Any]) -> str:
        return format_table(results, self.metric.class_names)

    def documents(self, results: Mapping[str, Any]) -> dict[str, str]:
        return {"results.json": dumps_indented(results_to_json(results, self.metric))}
