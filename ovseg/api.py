"""Public entry points: ``create_pipeline`` from a preset name, YAML path or mapping."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig

from ovseg.config import load_config, merge_configs, to_container
from ovseg.errors import ConfigError
from ovseg.plugins import load_plugins
from ovseg.registry import PIPELINES

DEFAULT_PRESET = "shapes-tiny"


def build_pipeline_config(
    preset_or_config: str | os.PathLike | Mapping[str, Any] = DEFAULT_PRESET,
    overrides: Iterable[str] = (),
    **pipeline_kwargs: Any,
) -> DictConfig:
    """The resolved config a pipeline is built from (``key=value`` overrides, then kwargs)."""
    cfg = load_config(preset_or_config, overrides)
    if "pipeline" not in cfg:
        raise ConfigError(
            f"{cfg.get('_source_', preset_or_config)} has no 'pipeline' section; a pipeline "
            "config needs pipeline: {type: SemanticSegmenter, backbone: {...}, ...}."
        )
    if pipeline_kwargs:
        merged = merge_configs(to_container(cfg["pipeline"]), pipeline_kwargs)
        cfg["pipeline"] = merged
    return cfg


def create_pipeline(
    preset_or_config: str | os.PathLike | Mapping[str, Any] = DEFAULT_PRESET,
    vocabulary: Any = None,
    *,
    overrides: Iterable[str] = (),
    device: str | None = None,
    **pipeline_kwargs: Any,
):
    """Build a ready pipeline.

    Args:
        preset_or_config: a preset name (``ovseg list presets``), a YAML path, or a mapping.
        vocabulary: class names (list, ``"a, b|b2, c"`` string, or ``{file: ...}``); defaults to
            the preset's vocabulary.
        overrides: ``key=value`` strings applied to the config (``pipeline.logit_scale=50``).
        device: where the backbone runs (``cpu``, ``cuda``, ``cuda:1``).
        **pipeline_kwargs: merged into the ``pipeline`` section, e.g. ``logit_scale=50`` or
            ``inference={"mode": "whole"}``.

    Example::

        seg = ovseg.create_pipeline("shapes-tiny", vocabulary=["red star", "sand"])
        result = seg("scene.png")  # OVSegResult
    """
    cfg = build_pipeline_config(preset_or_config, overrides, **pipeline_kwargs)
    load_plugins(cfg)
    pipeline_cfg = to_container(cfg["pipeline"])
    if device is not None:
        pipeline_cfg.setdefault("backbone", {})["device"] = device
    if vocabulary is None and cfg.get("vocabulary") is not None:
        vocabulary = to_container(cfg)["vocabulary"]
    if vocabulary is not None:
        pipeline_cfg["vocabulary"] = vocabulary
    pipeline = PIPELINES.build(pipeline_cfg)
    pipeline.config = cfg
    pipeline.meta = {"config": str(cfg.get("_source_", ""))}
    return pipeline
