"""Vocabulary-free evaluator: segmentations whose class names were searched, not given.

The pipeline (``ovseg.api.build_vocab_free_pipeline`` on the config, which
names a text database) returns per image an ``OVSegResult`` whose ``class_names`` it found
itself. Scored against the dataset's label maps (ADE20K layout, say):

* **matched mIoU** (:class:`~ovseg.evaluation.vocab_free.VocabFreeSegMetric`): names matched one
  to one to true classes over the whole dataset by pixel overlap, unmatched names count as IoU 0;
* **naming** (CaSED's metrics, :mod:`ovseg.evaluation.vocab_free`): every true class present in
  an image is one sample, named by the predicted name covering most of its pixels (the empty
  name when none does); cluster accuracy, semantic IoU, exact accuracy and, with
  ``similarity: true`` (needs ``ovseg[vocab-eval]``), semantic similarity;
* **vocabulary recall / precision** per image: exact names found vs classes present.

Settings::

    evaluation:
      type: VocabFreeEvaluator
      similarity: false    # semantic similarity of names with all-MiniLM-L6-v2
      ignore_index: 255    # default: the dataset's
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ovseg.evaluation.evaluator import DatasetEvaluator
from ovseg.evaluation.jsonio import dumps_indented, nan_to_none
from ovseg.evaluation.table import render_table
from ovseg.evaluation.vocab_free import (
    VocabFreeSegMetric,
    classification_report,
)
from ovseg.registry import EVALUATORS

NAMING_COLUMNS = ("cluster_accuracy", "semantic_iou", "semantic_similarity", "exact_accuracy")


def region_names(
    sem_seg: np.ndarray, names: Sequence[str], label: np.ndarray, class_names: Sequence[str],
    ignore_index: int,
) -> list[tuple[str, str]]:  # fmt: skip
    """``(predicted name, true class)`` for every true class present in ``label``.

    The predicted name is the one of ``names`` covering most of the class's pixels (the lowest
    index on a tie), or ``""`` when no pixel of it got a name (``sem_seg`` outside
    ``[0, len(names))``). Classes come in index order.
    """
    pred, lab = np.asarray(sem_seg).astype(np.int64), np.asarray(label).astype(np.int64)
    pairs = []
    for c in np.unique(lab[(lab != ignore_index) & (lab >= 0) & (lab < len(class_names))]):
        inside = pred[lab == c]
        inside = inside[(inside >= 0) & (inside < len(names))]
        best = names[int(np.bincount(inside).argmax())] if inside.size else ""
        pairs.append((best, class_names[int(c)]))
    return pairs


@EVALUATORS.register(aliases=("vocab_free",))
class VocabFreeEvaluator(DatasetEvaluator):
    """Matched mIoU, naming metrics and vocabulary recall of a vocabulary-free pipeline.

    Args:
        class_names: the true classes (label value ``i`` is ``class_names[i]``).
        ignore_index: label value left out.
        similarity: also report semantic similarity (sentence embeddings of the names).
        encoder: ``names -> (N, E)`` embeddings for it (default all-MiniLM-L6-v2).

    ``process(inputs, outputs)``: ``inputs`` holds "label" ((H, W) integer) and a "filename"
    or "image_id" (orders the samples, so the result does not depend on sharding); ``outputs``
    has ``sem_seg`` ((H, W) indices into ``outputs.class_names``) and ``class_names``.
    """

    task = "vocab_free"

    def __init__(
        self,
        class_names: Sequence[str],
        ignore_index: int = 255,
        similarity: bool = False,
        encoder: Callable[[list[str]], np.ndarray] | None = None,
    ) -> None:
        self.class_names = [str(n) for n in class_names]
        self.ignore_index = int(ignore_index)
        self.similarity = bool(similarity)
        self.encoder = encoder
        self.reset()

    @classmethod
    def from_dataset(
        cls, dataset: Any, *, ignore_index: int | None = None, similarity: bool = False
    ) -> VocabFreeEvaluator:
        if ignore_index is None:
            ignore_index = getattr(dataset, "ignore_index", 255)
        return cls(list(dataset.class_names), int(ignore_index), similarity)

    def reset(self) -> None:
        self.segmentation = VocabFreeSegMetric(self.class_names, self.ignore_index)
        # per image: (key, [(predicted name, true class)], recall, precision)
        self._images: list[tuple[str, list[tuple[str, str]], float, float]] = []

    def process(self, inputs: Mapping[str, Any], outputs: Any) -> None:
        names = [str(n) for n in outputs.class_names]
        label = np.asarray(inputs["label"])
        self.segmentation.process(outputs.sem_seg, names, label)
        pairs = region_names(outputs.sem_seg, names, label, self.class_names, self.ignore_index)
        present = {true for _, true in pairs}
        found = set(names)
        recall = len(found & present) / max(1, len(present))
        precision = len(found & present) / max(1, len(found))
        key = str(inputs.get("filename", inputs.get("image_id", len(self._images))))
        self._images.append((key, pairs, recall, precision))

    def state(self) -> dict[str, Any]:
        return {"segmentation": self.segmentation.state(), "images": list(self._images)}

    def merge(self, states: Sequence[Mapping[str, Any]]) -> None:
        self.reset()
        for state in states:
            self.segmentation.merge(state["segmentation"])
            self._images.extend(state["images"])

    def evaluate(self) -> dict[str, Any]:
        """``{"matched_mIoU", "IoU" {class: %}, "matching" {name: class}, "unmatched_names",
        "num_predicted_names", "naming" {cluster_accuracy, semantic_iou, exact_accuracy,
        [semantic_similarity], num_samples, num_predicted_names}, "vocabulary_recall",
        "vocabulary_precision", "num_images"}``, in percent; NaN where nothing is averaged."""
        images = sorted(self._images, key=lambda item: item[0])
        pairs = [pair for _, image_pairs, _, _ in images for pair in image_pairs]
        segmentation = self.segmentation.compute()
        naming: dict[str, Any] = {"num_samples": 0}
        if pairs:
            predicted, targets = [p for p, _ in pairs], [t for _, t in pairs]
            naming = classification_report(
                predicted, targets, self.encoder, similarity=self.similarity
            )
        n = len(images)
        return {
            "matched_mIoU": segmentation["mIoU"],
            "IoU": segmentation["IoU"],
            "matching": segmentation["matching"],
            "unmatched_names": segmentation["unmatched_names"],
            "num_predicted_names": segmentation["num_predicted_names"],
            "naming": naming,
            "vocabulary_recall": 100 * math.fsum(i[2] for i in images) / n if n else math.nan,
            "vocabulary_precision": 100 * math.fsum(i[3] for i in images) / n if n else math.nan,
            "num_images": n,
        }

    def format(self, results: Mapping[str, Any]) -> str:
        naming = results["naming"]
        header = ["matched mIoU", *[c for c in NAMING_COLUMNS if c in naming]]
        header += ["vocab recall", "vocab precision", "names", "images"]
        row = [results["matched_mIoU"], *[naming[c] for c in NAMING_COLUMNS if c in naming]]
        row += [results["vocabulary_recall"], results["vocabulary_precision"]]
        row += [str(results["num_predicted_names"]), str(results["num_images"])]
        return render_table(header, [row])

    def documents(self, results: Mapping[str, Any]) -> dict[str, str]:
        document = {"task": "vocab_free_segmentation", **results}
        return {"results.json": dumps_indented(nan_to_none(document))}
