"""``ovseg eval``: build a config's pipeline and test dataset, score it, print and save results.

The config holds ``pipeline`` (as presets do), ``data.test`` (a registered dataset) and optional
``evaluation`` settings::

    _base_: shapes-tiny
    data:
      test: {type: ADE20KDataset, root: data/synth, split: validation}
    evaluation:
      groups: auto        # seen / unseen from the dataset's split file, or {name: [classes]}
    work_dir: work_dirs/eval_shapes_tiny

The vocabulary is the dataset's class list unless the config sets ``vocabulary``; pixels whose
label is the dataset's ``ignore_index`` (255 unless the dataset says otherwise, or
``evaluation.ignore_index``) are not evaluated. Run under ``torchrun`` to shard the images over
processes; the counts are summed, so the numbers equal a one-process run exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ovseg.api import create_pipeline
from ovseg.config import load_config, save_resolved_config, to_container
from ovseg.engine.dist import init_distributed
from ovseg.errors import ConfigError
from ovseg.evaluation.groups import resolve_groups
from ovseg.evaluation.semseg import SemSegMetric
from ovseg.evaluation.semseg_eval import evaluate_semantic
from ovseg.plugins import load_plugins
from ovseg.registry import DATASETS


class FirstItems:
    """The first ``limit`` items of a dataset (smoke runs); other attributes pass through."""

    def __init__(self, dataset: Any, limit: int) -> None:
        if int(limit) < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}.")
        self.dataset = dataset
        self.limit = min(int(limit), len(dataset))

    def __len__(self) -> int:
        return self.limit

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.limit:
            raise IndexError(f"index {index} out of range for the first {self.limit} items")
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def run_semantic_evaluation(
    config: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    work_dir: str | Path | None = None,
    device: str | None = None,
    limit: int | None = None,
    dataset: Any = None,
) -> dict[str, Any]:
    """Evaluate a semantic-segmentation config; returns the metric dict (same on every rank).

    ``limit`` evaluates only the first ``limit`` images. ``dataset`` is an already built test
    dataset (then ``data.test`` is only recorded in the saved config, not built again).
    """
    cfg = load_config(config, overrides)
    data_cfg = cfg.get("data", {}) or {}
    if dataset is None and "test" not in data_cfg:
        raise ConfigError(
            f"{cfg.get('_source_')} has no data.test section; add e.g. "
            "data.test={type: ADE20KDataset, root: DIR, split: validation}."
        )
    load_plugins(cfg)
    info = init_distributed(device or "cpu")
    if dataset is None:
        dataset = DATASETS.build(to_container(data_cfg)["test"])
    if limit is not None:
        dataset = FirstItems(dataset, limit)
    settings = to_container(cfg.get("evaluation", {}) or {})
    vocabulary = to_container(cfg)["vocabulary"] if cfg.get("vocabulary") else None
    class_names = list(dataset.class_names)
    # identical weights on every rank if the backbone is randomly initialised
    torch.manual_seed(int(cfg.get("seed", 0)))
    pipeline = create_pipeline(cfg, vocabulary or class_names, device=str(info.device))
    if len(pipeline.vocabulary) != len(class_names):
        raise ConfigError(
            f"The vocabulary has {len(pipeline.vocabulary)} classes but the dataset "
            f"{len(class_names)}; the label indices must match the vocabulary order."
        )
    metric = SemSegMetric(
        num_classes=len(class_names),
        class_names=class_names,
        # 255 unless the dataset says otherwise (65535 for the 459 / 847-class sets)
        ignore_index=int(settings.get("ignore_index", getattr(dataset, "ignore_index", 255))),
        groups=resolve_groups(settings.get("groups", "auto"), dataset, class_names),
    )
    out_dir = Path(work_dir or cfg.get("work_dir") or "work_dirs/eval")
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, out_dir / "config.yaml")
    results = evaluate_semantic(
        lambda image: pipeline(image).sem_seg,
        dataset,
        metric,
        out_json=out_dir / "results.json",
        progress=bool(settings.get("progress", True)),
    )
    if info.is_main:
        print(f"results written to {out_dir / 'results.json'}")
    return results
