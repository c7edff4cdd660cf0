"""The evaluation loop (``ovseg eval``, ``tools/test.py``, the benchmark suites).

A config holds ``pipeline`` / ``pipelines`` (as presets do), ``data.test`` (a registered
dataset) and an optional ``evaluation`` section whose ``type`` names a registered evaluator
(``ovseg list components``); the other keys are that evaluator's settings, plus ``progress``
(show a progress bar, default true)::

    _base_: shapes-tiny
    data:
      test: {type: ADE20KDataset, root: data/synth, split: validation}
    evaluation:
      type: SemSegEvaluator   # the default; CocoInstanceEvaluator, ReferringMetric,
      groups: auto            #   ReasoningMetric, VocabFreeEvaluator ...
    work_dir: work_dirs/eval_shapes_tiny

The evaluator says which pipeline it scores (its ``task``, or the ``pipelines.<name>`` section
named by its ``pipeline_key``, e.g. ``evaluation.pipeline: semantic_painted`` for
``SemSegEvaluator``); :func:`evaluate` builds that
pipeline with the dataset's classes as vocabulary (the config's ``vocabulary`` if it sets one),
runs every image through it and the evaluator, prints the evaluator's tables and writes
``results.json`` (and any other file the evaluator produces) plus the resolved ``config.yaml``
in the work dir, atomically.

Under ``torchrun`` each process takes the images ``rank, rank + world_size, ...``; the
evaluators' states are gathered and merged on rank 0, which evaluates and sends the metrics to
every rank, so each rank returns the numbers of a one-process run. Only rank 0 shows progress,
prints and writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ovseg.config import load_config, save_resolved_config, to_container
from ovseg.engine.dist import (
    all_gather_object,
    broadcast_object,
    get_rank,
    get_world_size,
    init_distributed,
)
from ovseg.errors import ConfigError, EvaluationError, OVSegError

# the evaluators register themselves in EVALUATORS on import
from ovseg.evaluation import (  # noqa: F401
    detection_evaluator,
    grounding_evaluator,
    instance_evaluator,
    lvis_evaluator,
    reasoning_evaluator,
    referring_evaluator,
    semseg_evaluator,
    vocab_free_evaluator,
)
from ovseg.evaluation.evaluator import TASKS, DatasetEvaluator
from ovseg.fileio import atomic_write_text
from ovseg.plugins import load_plugins
from ovseg.registry import DATASETS, EVALUATORS
from ovseg.vocab import Vocabulary

DEFAULT_EVALUATOR = "SemSegEvaluator"
# evaluation.* keys that steer the loop rather than the evaluator
LOOP_SETTINGS = ("type", "progress")


def predict(pipeline: Any, evaluator: DatasetEvaluator, inputs: Mapping[str, Any]) -> Any:
    """The pipeline's prediction for one sample, in the form ``evaluator.process`` takes.

    ``referring`` / ``reasoning``: ``set_image`` once, then a ``predict(phrase)`` result per
    phrase (or question) of ``evaluator.queries(inputs)`` (a list); ``grounding``: the same with
    each phrase as a one-class vocabulary (commas and ``|`` stay in the phrase) and
    ``evaluator.predict_settings``; other tasks: ``pipeline(inputs["image"])``.
    """
    if evaluator.task in ("referring", "reasoning"):
        pipeline.set_image(inputs["image"])
        return [pipeline.predict(phrase) for phrase in evaluator.queries(inputs)]
    if evaluator.task == "grounding":
        encoded = pipeline.set_image(inputs["image"])
        return [
            pipeline.predict(encoded, Vocabulary(((phrase,),)), **evaluator.predict_settings)
            for phrase in evaluator.queries(inputs)
        ]
    return pipeline(inputs["image"])


def _sample_name(sample: Mapping[str, Any], index: int) -> str:
    for key in ("filename", "image_path"):
        if sample.get(key):
            return str(sample[key])
    return f"item {index}"


def _gathered_results(evaluator: DatasetEvaluator) -> dict[str, Any]:
    """Merge every rank's state on rank 0, evaluate there, and return the metrics on all ranks.

    An error while merging or evaluating reaches every rank instead of leaving the others
    waiting: rank 0 raises it as it is, the others as the same ovseg error type (any other
    error as an EvaluationError naming it).
    """
    states = all_gather_object(evaluator.state())
    outcome: tuple[str, Any, Any] = ("results", None, None)
    failure: Exception | None = None
    if get_rank() == 0:
        try:
            evaluator.merge(states)
            outcome = ("results", None, evaluator.evaluate())
        except Exception as exc:  # noqa: BLE001 - every rank must hear of it
            failure = exc
            outcome = ("error", type(exc), str(exc))
    kind, error_type, value = broadcast_object(outcome)
    if failure is not None:
        raise failure
    if kind == "error":
        if isinstance(error_type, type) and issubclass(error_type, OVSegError):
            raise error_type(value)
        raise EvaluationError(f"Rank 0 could not evaluate: {error_type.__name__}: {value}")
    return value


def run_evaluation(
    evaluator: DatasetEvaluator,
    dataset: Any,
    pipeline: Any,
    *,
    indices: Iterable[int] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    show: bool = True,
) -> dict[str, Any]:
    """Run ``pipeline`` over ``dataset`` (sharded over ranks) and score it with ``evaluator``.

    Args:
        evaluator: where the samples go (reset first).
        dataset: sized, indexable; items are dicts (``image`` (H, W, 3) uint8 RGB and what the
            evaluator reads: ``label``, ``image_id``, ``instances`` ...).
        pipeline: what ``evaluator.task`` needs (see :func:`predict`); a plain function
            ``image -> prediction`` serves for the semantic, instance and vocab-free tasks.
            It runs under ``torch.no_grad``.
        indices: the dataset items to run (default all); the metrics cover those only.
        out_dir: where rank 0 writes the evaluator's files (``results.json`` ...).
        progress: show a tqdm bar (rank 0 only).
        show: print the evaluator's tables (rank 0 only).

    Returns:
        ``evaluator.evaluate()``'s dict, identical on every rank.

    Raises:
        The evaluator's errors for a prediction it cannot score, the sample's file named first.
    """
    rank = get_rank()
    world_size = get_world_size()
    evaluator.reset()
    chosen = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    bar = tqdm(chosen[rank::world_size], desc="eval", unit="img", disable=not progress or rank)
    with torch.no_grad():
        for index in bar:
            sample = dataset[index]
            outputs = predict(pipeline, evaluator, sample)
            try:
                evaluator.process(sample, outputs)
            except (ValueError, TypeError) as exc:  # EvaluationError is a ValueError
                raise type(exc)(f"{_sample_name(sample, index)}: {exc}") from exc
    bar.close()

    results = _gathered_results(evaluator)
    if rank == 0:
        if show:
            print(evaluator.format(results), flush=True)
        if out_dir is not None:
            for name, text in evaluator.documents(results).items():
                atomic_write_text(Path(out_dir) / name, text)
    return results


def build_evaluator(settings: Mapping[str, Any] | None, dataset: Any) -> DatasetEvaluator:
    """The evaluator an ``evaluation`` section names (default semantic mIoU) for ``dataset``.

    Raises:
        UnknownComponentError: no evaluator of that name (close matches are suggested).
        ConfigError: it is not a dataset evaluator, or a setting is not one of its own.
    """
    settings = dict(settings or {})
    name = str(settings.get("type") or DEFAULT_EVALUATOR)
    factory = EVALUATORS.get(name)
    if not (isinstance(factory, type) and issubclass(factory, DatasetEvaluator)):
        raise ConfigError(
            f"evaluation.type {name!r} is not a dataset evaluator; choose one of "
            f"{', '.join(evaluator_names())}."
        )
    options = {k: v for k, v in settings.items() if k not in LOOP_SETTINGS}
    try:
        return factory.from_dataset(dataset, **options)
    except TypeError as exc:
        raise ConfigError(f"Cannot build evaluator {name!r} from evaluation: {exc}") from exc


def evaluator_names() -> list[str]:
    """Registered names (aliases included) of the dataset evaluators."""
    return [
        name
        for name in EVALUATORS.names()
        if isinstance(EVALUATORS.get(name), type)
        and issubclass(EVALUATORS.get(name), DatasetEvaluator)
    ]


def build_pipeline(cfg: Any, evaluator: DatasetEvaluator, device: str) -> Any:
    """The config's pipeline for ``evaluator.task``, on ``device``."""
    from ovseg.api import create_pipeline  # the api imports every component; keep it lazy

    if evaluator.task not in TASKS:
        raise ConfigError(f"Evaluator task {evaluator.task!r} is not one of {', '.join(TASKS)}.")
    if evaluator.task == "vocab_free":
        from ovseg.api import build_vocab_free_pipeline

        return build_vocab_free_pipeline(cfg, device=device)
    if evaluator.task in ("referring", "reasoning"):
        return create_pipeline(cfg, task=evaluator.task, device=device)
    if evaluator.task == "grounding":
        return create_pipeline(cfg, task="detection", device=device)
    vocabulary = to_container(cfg)["vocabulary"] if cfg.get("vocabulary") else None
    return create_pipeline(
        cfg,
        vocabulary or evaluator.vocabulary,
        task=evaluator.pipeline_key or evaluator.task,
        device=device,
    )


def evaluate(
    cfg_or_path: str | Path | Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    work_dir: str | Path | None = None,
    device: str | None = None,
    limit: int | None = None,
    dataset: Any = None,
) -> dict[str, Any]:
    """Evaluate a config on its test data (see the module docstring); the metrics on every rank.

    Args:
        cfg_or_path: a config path, preset name or mapping.
        overrides: ``key=value`` overrides.
        work_dir: output folder (default the config's ``work_dir``, else ``work_dirs/eval``).
        device: ``cpu`` (default), ``cuda`` ...
        limit: evaluate only the first ``limit`` images (smoke runs); scored on those alone.
        dataset: an already built test dataset (then ``data.test`` is only recorded in the
            saved config, not built again).

    Raises:
        UnknownComponentError: ``evaluation.type`` names no evaluator (close matches are named).
        ConfigError: no ``data.test``, a misconfigured evaluator, a bad ``limit``, or a
            pipeline that does not fit the dataset.
    """
    cfg = load_config(cfg_or_path, overrides)
    data_cfg = cfg.get("data", {}) or {}
    if dataset is None and "test" not in data_cfg:
        raise ConfigError(
            f"{cfg.get('_source_')} has no data.test section; add e.g. "
            "data.test={type: ADE20KDataset, root: DIR, split: validation}."
        )
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}.")
    settings = to_container(cfg.get("evaluation", {}) or {})
    if not isinstance(settings, Mapping):
        raise ConfigError(f"evaluation must be a mapping of settings, got {settings!r}.")
    load_plugins(cfg)
    EVALUATORS.get(str(settings.get("type") or DEFAULT_EVALUATOR))  # before anything is built
    info = init_distributed(device or "cpu")
    if dataset is None:
        dataset = DATASETS.build(to_container(data_cfg)["test"])
    evaluator = build_evaluator(settings, dataset)
    # identical weights on every rank if a model is randomly initialised
    torch.manual_seed(int(cfg.get("seed", 0)))
    pipeline = build_pipeline(cfg, evaluator, str(info.device))
    evaluator.check_pipeline(pipeline)
    out_dir = Path(work_dir or cfg.get("work_dir") or "work_dirs/eval")
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, out_dir / "config.yaml")
    indices = range(min(int(limit), len(dataset))) if limit is not None else None
    results = run_evaluation(
        evaluator,
        dataset,
        pipeline,
        indices=indices,
        out_dir=out_dir,
        progress=bool(settings.get("progress", True)),
    )
    if info.is_main:
        print(f"results written to {out_dir / 'results.json'}")
    return results
