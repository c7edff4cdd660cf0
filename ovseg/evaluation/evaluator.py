"""The evaluator protocol: what one metric needs to be run by the evaluation loop.

An evaluator sees the dataset one sample at a time, with the pipeline's prediction for it, and
turns what it collected into a metric dict, as detectron2's ``DatasetEvaluator`` does::

    evaluator.reset()
    for sample in dataset:                       # this process's share under torchrun
        evaluator.process(sample, prediction)    # prediction: see the evaluator's ``task``
    metrics = evaluator.evaluate()               # after the shares were merged (rank 0)

Sharding is not the evaluator's business: :func:`ovseg.evaluation.loop.run_evaluation` gathers
every process's :meth:`~DatasetEvaluator.state`, :meth:`~DatasetEvaluator.merge` s them in rank
order on rank 0, evaluates there and hands the metrics to every rank. An evaluator's state must
therefore be picklable and its ``evaluate`` independent of how the samples were split (integer
counts, exactly rounded sums or an order fixed by sample ids), so that a sharded run gives the
numbers of a one-process run exactly.

Evaluators are registered in ``ovseg.registry.EVALUATORS`` and built for a dataset by
:meth:`DatasetEvaluator.from_dataset` with the config's ``evaluation`` keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

TASKS = ("semantic", "instance", "referring", "reasoning", "vocab_free", "detection", "grounding")


class DatasetEvaluator:
    """Base class of the evaluators (see the module docstring).

    Class attributes:
        task: the pipeline the evaluator scores: ``semantic`` (image -> ``OVSegResult`` or an
            (H, W) index map), ``instance`` (image -> ``Instances``), ``referring``
            (``set_image`` + ``predict(phrase)`` per phrase of :meth:`queries`), ``reasoning``
            (the same with questions to a ``[SEG]``-token model),
            ``vocab_free`` (image -> ``OVSegResult`` whose class names were searched),
            ``detection`` (image -> ``Detections``; the detection pipeline, built with
            :attr:`vocabulary`) or ``grounding`` (the detection pipeline: ``set_image``, then
            per phrase of :meth:`queries` a ``predict`` with that phrase as the one class and
            the overrides :attr:`predict_settings`).

    Attributes:
        vocabulary: the class names the pipeline must be built with (in label order), or None
            when the evaluator needs none (referring, vocabulary-free).
    """

    task: ClassVar[str] = "semantic"
    vocabulary: list[str] | None = None
    #: the config section whose pipeline is scored instead of the task's own (a
    #: ``pipelines.<name>`` key such as ``semantic_painted``; it must give the task's results)
    pipeline_key: str | None = None
    #: per-call overrides of the ``grounding`` task's ``predict``
    predict_settings: ClassVar[dict[str, Any]] = {}

    @classmethod
    def from_dataset(cls, dataset: Any, **settings: Any) -> DatasetEvaluator:
        """An evaluator for ``dataset`` with the config's ``evaluation`` settings."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a dataset.")

    def reset(self) -> None:
        """Forget every processed sample."""
        raise NotImplementedError

    def queries(self, inputs: Mapping[str, Any]) -> list[str]:
        """The phrases / questions to predict for one sample (referring and reasoning only)."""
        return []

    def process(self, inputs: Mapping[str, Any], outputs: Any) -> None:
        """Add one dataset sample (``inputs``) and the pipeline's prediction for it."""
        raise NotImplementedError

    def state(self) -> Any:
        """A picklable copy of what :meth:`process` collected on this process."""
        raise NotImplementedError

    def merge(self, states: Sequence[Any]) -> None:
        """Replace what was collected by the union of ``states`` (one per rank, in rank order)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, Any]:
        """The metrics over the collected samples."""
        raise NotImplementedError

    def check_pipeline(self, pipeline: Any) -> None:
        """Refuse a pipeline that cannot be scored (e.g. a vocabulary of the wrong size)."""

    def format(self, results: Mapping[str, Any]) -> str:
        """The text printed after the run (tables), without a trailing newline."""
        raise NotImplementedError

    def documents(self, results: Mapping[str, Any]) -> dict[str, str]:
        """Files to write in the work dir: ``{file name: text}``; ``results.json`` first."""
        raise NotImplementedError


class PerImageCocoResults:
    """COCO result entries kept per image, for evaluators that score with pycocotools or lvis.

    ``self._per_image``: ``(image_id, entries)`` in processing order (set by ``reset``);
    ``state`` / ``merge`` carry it across processes.
    """

    _per_image: list[tuple[int, list[dict[str, Any]]]]

    @property
    def image_ids(self) -> list[int]:
        """Ids of the processed images, sorted."""
        return sorted(image_id for image_id, _ in self._per_image)

    def results(self) -> list[dict[str, Any]]:
        """COCO result entries, in image-id order (each image's entries in prediction order)."""
        ordered = sorted(self._per_image, key=lambda item: item[0])
        return [entry for _, entries in ordered for entry in entries]

    def state(self) -> list[tuple[int, list[dict[str, Any]]]]:
        return list(self._per_image)

    def merge(self, states: Sequence[list[tuple[int, list[dict[str, Any]]]]]) -> None:
        self._per_image = [item for state in states for item in state]
