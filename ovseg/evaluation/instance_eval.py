"""Run an instance-segmentation predictor over a COCO dataset and score it (box and mask AP).

Under torch.distributed each rank predicts the images ``rank, rank + world_size, ...``; the
COCO result entries of every rank are gathered on every rank and put in image-id order, rank 0
runs pycocotools' ``COCOeval`` and broadcasts the metrics, so every rank returns the same dict,
identical to a one-process run. Only rank 0 shows progress, prints the tables and writes files.

``ovseg eval`` reaches this through ``run_instance_evaluation`` when a config's
``evaluation.type`` names ``CocoInstanceEvaluator``::

    _base_: some-preset                     # with a pipelines.instance section
    data:
      test: {type: COCOInstances, root: data/synth/coco, split: val}
    evaluation:
      type: CocoInstanceEvaluator
      iou_types: [bbox, segm]
    work_dir: work_dirs/eval_instances

``limit`` (``ovseg eval --limit N``) scores only the first N images, on those images alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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
from ovseg.errors import ConfigError, EvaluationError
from ovseg.evaluation.coco import (
    IOU_TYPES,
    GroundTruth,
    evaluate_coco,
    format_coco_table,
    instances_to_coco_results,
    load_ground_truth,
    write_coco_metrics,
    write_coco_results,
)
from ovseg.evaluation.groups import group_means, resolve_groups
from ovseg.plugins import load_plugins
from ovseg.registry import DATASETS, EVALUATORS
from ovseg.structures import Instances

# evaluation.* keys that steer the run rather than the evaluator
RUN_SETTINGS = ("type", "progress", "groups")


@EVALUATORS.register(aliases=("coco_ap",))
class CocoInstanceEvaluator:
    """Collects predicted ``Instances`` image by image as COCO results; scores them by COCOeval.

    Args:
        gt: ground truth (pycocotools ``COCO``, e.g. a ``COCOInstances`` dataset's ``coco``, or
            an instances JSON path).
        category_ids: COCO category id of each label index; default: the ground truth's ids,
            sorted (the order of ``COCOInstances.class_names``).
        iou_types: any of "bbox", "segm" (masks are encoded only when "segm" is asked for).

    Only the images passed to ``process`` are scored (a partial run is scored on its images;
    an image without predictions counts as having no detection).

    Usage::

        evaluator = CocoInstanceEvaluator(dataset.coco, dataset.category_ids)
        evaluator.process(image_id, instances)     # once per image
        evaluator.all_gather()                     # under torch.distributed, once
        metrics = evaluator.compute()              # see ovseg.evaluation.coco.evaluate_coco
    """

    def __init__(
        self,
        gt: GroundTruth,
        category_ids: Sequence[int] | None = None,
        iou_types: Sequence[str] = IOU_TYPES,
    ) -> None:
        self.gt = load_ground_truth(gt)
        self.category_ids = (
            [int(c) for c in category_ids] if category_ids is not None else sorted(self.gt.cats)
        )
        unknown = [c for c in self.category_ids if c not in self.gt.cats]
        if unknown:
            raise EvaluationError(
                f"category_ids {unknown} are not categories of the ground truth; pass the "
                "dataset's category_ids."
            )
        self.iou_types = [iou_types] if isinstance(iou_types, str) else list(iou_types)
        bad = [t for t in self.iou_types if t not in IOU_TYPES]
        if bad or not self.iou_types:
            raise ConfigError(f"iou_types must be some of {IOU_TYPES}, got {self.iou_types}.")
        self.reset()

    def reset(self) -> None:
        """Forget every processed image."""
        self._per_image: list[tuple[int, list[dict[str, Any]]]] = []
        self._gathered = False

    def process(self, image_id: int, instances: Instances) -> None:
        """Add the predictions for one ground-truth image.

        Raises:
            EvaluationError: ``image_id`` is not in the ground truth, the instances' class list
                does not match ``category_ids``, or the masks are not of the image's size.
            TypeError: ``instances`` is not an ``Instances``.
        """
        if not isinstance(instances, Instances):
            raise TypeError(
                f"predict must return ovseg.structures.Instances, got {type(instances).__name__}."
            )
        info = self.gt.imgs.get(int(image_id))
        if info is None:
            raise EvaluationError(
                f"image id {image_id} is not in the ground truth; evaluate against the "
                "annotation file of the images that were predicted."
            )
        if len(instances.class_names) != len(self.category_ids):
            raise EvaluationError(
                f"The instances name {len(instances.class_names)} classes but there are "
                f"{len(self.category_ids)} categories; predict with the dataset's class_names "
                "as vocabulary, in order."
            )
        size = (int(info["height"]), int(info["width"]))
        if "segm" in self.iou_types and len(instances) and instances.masks.shape[1:] != size:
            raise EvaluationError(
                f"Masks are {instances.masks.shape[2]}x{instances.masks.shape[1]} but image "
                f"{image_id} is {size[1]}x{size[0]}; resize the masks to the image size."
            )
        results = instances_to_coco_results(
            instances, int(image_id), self.category_ids, include_masks="segm" in self.iou_types
        )
        self._per_image.append((int(image_id), results))

    @property
    def image_ids(self) -> list[int]:
        """Ids of the processed images, sorted."""
        return sorted(image_id for image_id, _ in self._per_image)

    def results(self) -> list[dict[str, Any]]:
        """COCO result entries, in image-id order (each image's entries in prediction order)."""
        ordered = sorted(self._per_image, key=lambda item: item[0])
        return [entry for _, entries in ordered for entry in entries]

    def all_gather(self) -> None:
        """Collect every rank's processed images on every rank (no-op without a process group).

        Call once, after every rank has processed its share; a second call raises RuntimeError.
        """
        if self._gathered:
            raise RuntimeError(
                "CocoInstanceEvaluator.all_gather() was already called; call reset() first."
            )
        shards = all_gather_object(self._per_image)
        self._per_image = [item for shard in shards for item in shard]
        self._gathered = True

    def compute(self) -> dict[str, Any]:
        """``evaluate_coco`` over the processed images (see its Returns)."""
        ids = [image_id for image_id, _ in self._per_image]
        if not ids:
            raise EvaluationError("No image was processed, so there is nothing to evaluate.")
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise EvaluationError(
                f"Images {repeated} were processed more than once; give each image to one "
                "process once (do not pad the shards)."
            )
        return evaluate_coco(self.gt, self.results(), self.iou_types, img_ids=self.image_ids)


def evaluate_instances(
    predict: Callable[[np.ndarray], Instances],
    dataset: Sequence[dict[str, Any]],
    evaluator: CocoInstanceEvaluator | None = None,
    *,
    iou_types: Sequence[str] = IOU_TYPES,
    indices: Iterable[int] | None = None,
    out_json: str | os.PathLike | None = None,
    results_json: str | os.PathLike | None = None,
    progress: bool = True,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Run ``predict`` over ``dataset`` (sharded over ranks) and return its COCO metrics.

    Args:
        predict: maps ``sample["image"]`` ((H, W, 3) uint8 RGB) to ``Instances`` of that image
            (masks (N, H, W), boxes XYXY in its pixels, labels indexing the dataset's
            ``class_names``). It runs as given (no ``torch.no_grad`` is added here).
        dataset: a ``COCOInstances``-like dataset: sized, indexable, items with "image",
            "image_id" and "image_path"; attributes ``coco`` and ``category_ids`` (used when
            ``evaluator`` is None).
        evaluator: where results accumulate (reset first); default
            ``CocoInstanceEvaluator(dataset.coco, dataset.category_ids, iou_types)``.
        iou_types: for the default evaluator.
        indices: the dataset items to run (default all); the score covers those images only.
        out_json: where rank 0 writes the metrics (``coco_metrics_to_json``), atomically.
        results_json: where rank 0 writes the COCO results list, atomically.
        groups: class groups (e.g. seen / unseen); their mean per-category AP is added as
            ``metrics["groups"][iou_type][group]`` and printed.
        progress: show a tqdm bar (rank 0 only).

    Returns:
        The ``evaluate_coco`` dict, identical on every rank.

    Raises:
        EvaluationError / TypeError: a prediction cannot be scored (the message names the image).
    """
    rank, world_size = get_rank(), get_world_size()
    if evaluator is None:
        evaluator = CocoInstanceEvaluator(dataset.coco, dataset.category_ids, iou_types)
    evaluator.reset()
    chosen = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    bar = tqdm(chosen[rank::world_size], desc="eval", unit="img", disable=not progress or rank)
    for index in bar:
        sample = dataset[index]
        instances = predict(sample["image"])
        try:
            evaluator.process(sample["image_id"], instances)
        except (EvaluationError, TypeError) as exc:
            name = sample.get("image_path", f"item {index}")
            raise type(exc)(f"{name}: {exc}") from exc
    bar.close()

    evaluator.all_gather()
    outcome: tuple[str, Any] | None = None
    if rank == 0:  # one COCOeval run; an error reaches every rank instead of leaving them waiting
        try:
            outcome = ("metrics", evaluator.compute())
        except EvaluationError as exc:
            outcome = ("error", str(exc))
    kind, metrics = broadcast_object(outcome)
    if kind == "error":
        raise EvaluationError(metrics)
    if groups:
        metrics["groups"] = {
            iou_type: group_means(
                {c["name"]: c["AP"] for c in metrics[iou_type]["per_category"]}, groups
            )
            for iou_type in metrics["iou_types"]
            if iou_type in metrics
        }
    if rank == 0:
        print(format_coco_table(metrics), flush=True)
        for iou_type, means in metrics.get("groups", {}).items():
            summary = ", ".join(f"{name} {value:.2f}" for name, value in means.items())
            print(f"{iou_type} mean per-category AP by group: {summary}")
        if out_json is not None:
            write_coco_metrics(out_json, metrics)
        if results_json is not None:
            write_coco_results(results_json, evaluator.results())
    return metrics


def is_instance_evaluation(evaluation: Mapping[str, Any] | None) -> bool:
    """Whether a config's ``evaluation`` section asks for COCO instance evaluation."""
    type_name = (evaluation or {}).get("type")
    return (
        isinstance(type_name, str)
        and type_name in EVALUATORS
        and EVALUATORS.get(type_name) is CocoInstanceEvaluator
    )


def _as_instances(result: Any) -> Instances:
    """A pipeline's output as ``Instances`` (the object itself, or its ``instances``)."""
    if isinstance(result, Instances):
        return result
    inner = getattr(result, "instances", None)
    if isinstance(inner, Instances):
        return inner
    raise TypeError(
        f"The instance pipeline returned {type(result).__name__}, not Instances; the config's "
        "pipelines.instance must build an instance-segmentation pipeline."
    )


def run_instance_evaluation(
    config: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    work_dir: str | Path | None = None,
    device: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Evaluate an instance-segmentation config (see the module docstring) on its COCO data.

    ``limit`` runs only the first ``limit`` images and scores those. Writes ``config.yaml`` (resolved), ``results.json`` (metrics) and ``coco_results.json``
    (the predictions) under the work dir; returns the metrics (same on every rank).
    """
    from ovseg.api import create_pipeline  # the api imports every component; keep it lazy

    cfg = load_config(config, overrides)
    data_cfg = cfg.get("data", {}) or {}
    if "test" not in data_cfg:
        raise ConfigError(
            f"{cfg.get('_source_')} has no data.test section; add e.g. "
            "data.test={type: COCOInstances, root: DIR, split: val2017}."
        )
    load_plugins(cfg)
    info = init_distributed(device or "cpu")
    dataset = DATASETS.build(to_container(data_cfg)["test"])
    for attribute in ("coco", "category_ids", "class_names"):
        if not hasattr(dataset, attribute):
            raise ConfigError(
                f"data.test ({type(dataset).__name__}) has no {attribute!r}; instance evaluation "
                "needs a COCO dataset such as COCOInstances."
            )
    settings = to_container(cfg.get("evaluation", {}) or {})
    evaluator_cfg = {k: v for k, v in settings.items() if k not in RUN_SETTINGS}
    evaluator = EVALUATORS.build(
        {"type": settings.get("type", "CocoInstanceEvaluator"), **evaluator_cfg},
        gt=dataset.coco,
        category_ids=dataset.category_ids,
    )
    vocabulary = to_container(cfg)["vocabulary"] if cfg.get("vocabulary") else None
    # identical weights on every rank if a model is randomly initialised
    torch.manual_seed(int(cfg.get("seed", 0)))
    pipeline = create_pipeline(
        cfg, vocabulary or list(dataset.class_names), task="instance", device=str(info.device)
    )
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}.")
    indices = range(min(int(limit), len(dataset))) if limit is not None else None
    out_dir = Path(work_dir or cfg.get("work_dir") or "work_dirs/eval")
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, out_dir / "config.yaml")
    metrics = evaluate_instances(
        lambda image: _as_instances(pipeline(image)),
        dataset,
        evaluator,
        indices=indices,
        out_json=out_dir / "results.json",
        results_json=out_dir / "coco_results.json",
        progress=bool(settings.get("progress", True)),
        groups=resolve_groups(settings.get("groups"), dataset, list(dataset.class_names)),
    )
    if info.is_main:
        print(f"results written to {out_dir / 'results.json'}")
    return metrics
