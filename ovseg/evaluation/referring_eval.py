"""Referring segmentation scored on RefCOCO-style data, or on COCO instances (a phrase per class).

A dataset whose samples carry ``expressions`` ([{text, mask}], e.g. :class:`RefCOCODataset`) is
scored on those sentences::

    _base_: sclip-vitb16
    data:
      test: {type: RefCOCODataset, root: data/refer, dataset: refcoco, split_by: unc, split: val}
    evaluation: {type: ReferringMetric}

Otherwise every image of a COCO instances dataset gives one sample per category it contains: the phrase is the
category name put into ``evaluation.phrase`` (default ``"{}"``), the target is the union of that
category's instance masks. The pipeline (a config's ``pipelines.referring``) embeds each image
once and segments every phrase; samples go into :class:`ReferringMetric` overall and per class
group (``evaluation.groups``: ``{unseen: [...]}`` or a mapping of names), so unseen phrases are
reported apart::

    _base_: shapes-tiny
    data:
      test: {type: COCOInstances, root: data/synth/coco, split: val}
    evaluation:
      type: ReferringMetric
      phrase: "{}"
      groups: {unseen: [red triangle, ...]}
    work_dir: work_dirs/eval/referring

Under torchrun the images are sharded over ranks and the samples gathered, so the numbers equal
a one-process run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ovseg.config import load_config, save_resolved_config, to_container
from ovseg.engine.dist import get_rank, get_world_size, init_distributed
from ovseg.errors import ConfigError
from ovseg.evaluation.groups import resolve_groups
from ovseg.evaluation.referring import ReferringMetric
from ovseg.evaluation.table import render_table
from ovseg.fileio import atomic_write_json
from ovseg.plugins import load_plugins
from ovseg.registry import DATASETS

METRIC_COLUMNS = ("gIoU", "cIoU", "Pr@0.5", "Pr@0.7", "Pr@0.9")


def is_referring_evaluation(evaluation: Mapping[str, Any] | None) -> bool:
    """True when an ``evaluation`` section asks for referring metrics."""
    kind = (evaluation or {}).get("type")
    return kind in ("ReferringMetric", "referring_iou")


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


def _samples_of(
    sample: Mapping[str, Any], class_names: list[str], category_ids: list[int], template: str
) -> list[tuple[str | None, str, np.ndarray]]:
    """A referring dataset's own expressions, or one phrase per class of a COCO sample."""
    if "expressions" in sample:
        return [(None, e["text"], np.asarray(e["mask"], dtype=bool)) for e in sample["expressions"]]
    return phrases_and_targets(sample, class_names, category_ids, template)


def evaluate_referring(
    pipeline: Any,
    dataset: Any,
    *,
    template: str = "{}",
    groups: Mapping[str, list[str]] | None = None,
    indices: Iterable[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``pipeline`` (``set_image`` / ``predict(phrase) -> ReferringResult``) on ``dataset``.

    Returns:
        ``{"overall": metrics, "groups": {name: metrics}, "num_images": int}`` where metrics is
        :meth:`ReferringMetric.compute`'s dict (percent); identical on every rank.
    """
    rank, world_size = get_rank(), get_world_size()
    class_names = list(getattr(dataset, "class_names", []))
    category_ids = list(getattr(dataset, "category_ids", []))
    group_of = {c: g for g, members in (groups or {}).items() for c in members}
    overall = ReferringMetric()
    by_group = {name: ReferringMetric() for name in groups or {}}
    chosen = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    bar = tqdm(chosen[rank::world_size], desc="eval", unit="img", disable=not progress or rank)
    with torch.no_grad():
        for index in bar:
            sample = dataset[index]
            pipeline.set_image(sample["image"])
            for name, phrase, target in _samples_of(sample, class_names, category_ids, template):
                predicted = pipeline.predict(phrase).mask
                overall.process(predicted, target)
                if name in group_of:
                    by_group[group_of[name]].process(predicted, target)
    bar.close()
    for metric in (overall, *by_group.values()):
        metric.all_gather()
    return {
        "overall": overall.compute(),
        "groups": {name: metric.compute() for name, metric in by_group.items()},
        "num_images": len(chosen),
    }


def format_referring_table(results: Mapping[str, Any]) -> str:
    """Rows overall / per group, columns gIoU, cIoU, Pr@0.5/0.7/0.9 and the sample count."""
    rows = [("overall", results["overall"])] + list(results["groups"].items())
    header = ["split", *METRIC_COLUMNS, "samples"]
    body = [
        [name, *[metrics[c] for c in METRIC_COLUMNS], str(metrics["num_samples"])]
        for name, metrics in rows
    ]
    return render_table(header, body)


def run_referring_evaluation(
    config: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    work_dir: str | Path | None = None,
    device: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """``ovseg eval`` for a config whose ``evaluation.type`` is ``ReferringMetric``.

    Writes ``config.yaml`` and ``results.json`` under the work dir (rank 0) and prints the table.
    """
    from ovseg.api import create_pipeline  # the api imports every component; keep it lazy

    cfg = load_config(config, overrides)
    if "test" not in (cfg.get("data") or {}):
        raise ConfigError(
            f"{cfg.get('_source_')} has no data.test section; add e.g. "
            "data.test={type: COCOInstances, root: DIR, split: val}."
        )
    load_plugins(cfg)
    info = init_distributed(device or "cpu")
    dataset = DATASETS.build(to_container(cfg["data"])["test"])
    expressions = hasattr(dataset, "refs")  # a referring dataset brings its own sentences
    for attribute in ("class_names", "category_ids"):
        if not expressions and not hasattr(dataset, attribute):
            raise ConfigError(
                f"data.test ({type(dataset).__name__}) has no {attribute!r}; referring "
                "evaluation needs RefCOCODataset or a COCO instances dataset (COCOInstances)."
            )
    settings = to_container(cfg.get("evaluation") or {})
    template = str(settings.get("phrase", "{}"))
    if "{}" not in template:
        raise ConfigError(f"evaluation.phrase must contain '{{}}' for the class name: {template!r}")
    groups = (
        None
        if expressions
        else resolve_groups(settings.get("groups"), dataset, list(dataset.class_names))
    )
    torch.manual_seed(int(cfg.get("seed", 0)))
    pipeline = create_pipeline(cfg, task="referring", device=str(info.device))
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}.")
    indices = range(min(int(limit), len(dataset))) if limit is not None else None
    results = evaluate_referring(
        pipeline,
        dataset,
        template=template,
        groups=groups,
        indices=indices,
        progress=bool(settings.get("progress", True)),
    )
    out_dir = Path(work_dir or cfg.get("work_dir") or "work_dirs/eval")
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, out_dir / "config.yaml")
        atomic_write_json(out_dir / "results.json", _json_ready(results))
        print(format_referring_table(results), flush=True)
        print(f"results written to {out_dir / 'results.json'}")
    return results


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:  # NaN -> null (strict JSON)
        return None
    return value
