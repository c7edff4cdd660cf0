"""Public entry points: ``create_pipeline`` from a preset name, YAML path or mapping."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ovseg.config import load_config, merge_configs, to_container
from ovseg.errors import ConfigError
from ovseg.plugins import load_plugins
from ovseg.registry import PIPELINES

DEFAULT_PRESET = "shapes-tiny"


TASK_NAMES = ("semantic", "referring", "instance")


def _section_key(task: str) -> str:
    """Where a task's pipeline lives in a config: ``pipeline`` or ``pipelines.<task>``."""
    return "pipeline" if task == "semantic" else f"pipelines.{task}"


def build_pipeline_config(
    preset_or_config: str | os.PathLike | Mapping[str, Any] = DEFAULT_PRESET,
    overrides: Iterable[str] = (),
    *,
    task: str = "semantic",
    **pipeline_kwargs: Any,
) -> DictConfig:
    """The resolved config a pipeline is built from (``key=value`` overrides, then kwargs).

    The semantic pipeline is the config's ``pipeline`` section; other tasks live under
    ``pipelines.<task>`` (``referring``, ``instance``). ``pipeline_kwargs`` merge into the
    chosen section.
    """
    cfg = load_config(preset_or_config, overrides)
    source = cfg.get("_source_", preset_or_config)
    if task == "semantic" and "pipeline" not in cfg:
        raise ConfigError(
            f"{source} has no 'pipeline' section; a pipeline config needs "
            "pipeline: {type: SemanticSegmenter, backbone: {...}, ...}."
        )
    if task != "semantic":
        available = ["semantic"] if "pipeline" in cfg else []
        available += list((cfg.get("pipelines") or {}).keys())
        if task not in available:
            raise ConfigError(
                f"{source} has no pipeline for task {task!r} (it has: "
                f"{', '.join(available) or 'none'}). Add a 'pipelines: {{{task}: {{type: ...}}}}' "
                "section or choose a preset that has one (ovseg list presets)."
            )
    # Resolve interpolations (``${pipeline.backbone}``) against the whole config before picking.
    resolved = OmegaConf.create(to_container(cfg))
    section = OmegaConf.select(resolved, _section_key(task))
    if pipeline_kwargs:
        section = merge_configs(to_container(section), pipeline_kwargs)
    OmegaConf.update(resolved, _section_key(task), section, merge=False)
    resolved["_source_"] = source
    resolved["task"] = task
    return resolved


def _set_device(pipeline_cfg: dict[str, Any], device: str) -> None:
    """Put every model of a pipeline section (also nested pipelines) on ``device``."""
    for part in ("backbone", "decoder"):
        if isinstance(pipeline_cfg.get(part), dict):
            pipeline_cfg[part]["device"] = device
    for value in pipeline_cfg.values():
        if isinstance(value, dict) and "type" in value and "backbone" in value:
            _set_device(value, device)


def create_pipeline(
    preset_or_config: str | os.PathLike | Mapping[str, Any] = DEFAULT_PRESET,
    vocabulary: Any = None,
    *,
    task: str = "semantic",
    overrides: Iterable[str] = (),
    device: str | None = None,
    **pipeline_kwargs: Any,
):
    """Build a ready pipeline.

    Args:
        preset_or_config: a preset name (``ovseg list presets``), a YAML path, or a mapping.
        vocabulary: class names (list, ``"a, b|b2, c"`` string, or ``{file: ...}``); defaults to
            the preset's vocabulary. Ignored by the referring task (it takes phrases).
        task: ``semantic`` (``SemanticSegmenter``-like: image -> OVSegResult), ``referring``
            (image + phrase -> ReferringResult) or ``instance`` (image -> Instances).
        overrides: ``key=value`` strings applied to the config (``pipeline.logit_scale=50``).
        device: where the models run (``cpu``, ``cuda``, ``cuda:1``).
        **pipeline_kwargs: merged into the task's pipeline section, e.g. ``logit_scale=50`` or
            ``inference={"mode": "whole"}``.

    Example::

        seg = ovseg.create_pipeline("shapes-tiny", vocabulary=["red star", "sand"])
        result = seg("scene.png")  # OVSegResult
        ref = ovseg.create_pipeline("shapes-tiny", task="referring")
        found = ref("scene.png", "the red star")  # ReferringResult
    """
    if task not in TASK_NAMES:
        raise ConfigError(f"Unknown task {task!r}; choose one of {', '.join(TASK_NAMES)}.")
    cfg = build_pipeline_config(preset_or_config, overrides, task=task, **pipeline_kwargs)
    load_plugins(cfg)
    pipeline_cfg = to_container(OmegaConf.select(cfg, _section_key(task)))
    if device is not None:
        _set_device(pipeline_cfg, device)
    if task != "referring":
        if vocabulary is None and cfg.get("vocabulary") is not None:
            vocabulary = to_container(cfg)["vocabulary"]
        if vocabulary is not None:
            pipeline_cfg["vocabulary"] = vocabulary
    pipeline = PIPELINES.build(pipeline_cfg)
    pipeline.config = cfg
    pipeline.meta = {"config": str(cfg.get("_source_", "")), "task": task}
    return pipeline
