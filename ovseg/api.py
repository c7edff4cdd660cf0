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


TASK_NAMES = (
    "semantic",
    "referring",
    "instance",
    "detection",
    "reasoning",
    "vocab_free",
    "vocab_free_instance",
    "video_referring",
    "video_instance",
)
#: vocabulary-free tasks and the task whose pipeline section they wrap
VOCAB_FREE_TASKS = {"vocab_free": "semantic", "vocab_free_instance": "instance"}
#: the section vocabulary-free instances take when a config has it: SAM's class-agnostic
#: proposals (a preset whose ``pipelines.instance`` segments a detector's boxes keeps its SAM
#: route here)
CLASS_AGNOSTIC_INSTANCE = "instance_sam"
#: video tasks and the image task whose pipeline detects the objects they track
VIDEO_TASKS = {"video_referring": "referring", "video_instance": "instance"}


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


def _takes_vocabulary(pipeline_cfg: Mapping[str, Any]) -> bool:
    """Whether the pipeline ``pipeline_cfg`` builds accepts a default ``vocabulary``."""
    import inspect

    factory = PIPELINES.get(pipeline_cfg.get("type", ""))
    return "vocabulary" in inspect.signature(factory).parameters


def _set_device(pipeline_cfg: dict[str, Any], device: str) -> None:
    """Put every model of a pipeline section (also nested pipelines) on ``device``."""
    import inspect

    factory = PIPELINES.get(pipeline_cfg.get("type", ""))
    if "device" in inspect.signature(factory).parameters:  # a pipeline that loads its own model
        pipeline_cfg["device"] = device
    for part in ("backbone", "decoder", "detector"):
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
        task: ``semantic`` (``SemanticSegmenter``-like: image -> OVSegResult), any task with a
            ``pipelines.<task>`` section in the config (built-in: ``referring``
            (image + phrase -> ReferringResult), ``instance`` (image -> Instances),
            ``detection`` (image -> ``ovseg.structures.Detections``),
            ``reasoning`` (image + question -> ReasoningResult, READ), the
            vocabulary-free ``vocab_free`` / ``vocab_free_instance`` (names found in the
            config's text database, see :func:`build_vocab_free_pipeline`), or the video tasks
            ``video_referring`` / ``video_instance`` (see :func:`build_video_pipeline`).
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
    if not isinstance(task, str) or not task:
        raise ConfigError(f"task must be a name such as {', '.join(TASK_NAMES)}; got {task!r}.")
    if task in VOCAB_FREE_TASKS:
        if vocabulary is not None:
            raise ConfigError(
                f"task {task!r} finds the class names itself; pass no vocabulary (or use task "
                f"{VOCAB_FREE_TASKS[task]!r})."
            )
        return build_vocab_free_pipeline(
            preset_or_config,
            overrides=overrides,
            device=device,
            task=VOCAB_FREE_TASKS[task],
            **pipeline_kwargs,
        )
    if task in VIDEO_TASKS:
        return build_video_pipeline(
            preset_or_config,
            vocabulary,
            task=task,
            overrides=overrides,
            device=device,
            **pipeline_kwargs,
        )
    cfg = build_pipeline_config(preset_or_config, overrides, task=task, **pipeline_kwargs)
    load_plugins(cfg)
    pipeline_cfg = to_container(OmegaConf.select(cfg, _section_key(task)))
    if device is not None:
        _set_device(pipeline_cfg, device)
    if _takes_vocabulary(pipeline_cfg):
        if vocabulary is None and cfg.get("vocabulary") is not None:
            vocabulary = to_container(cfg)["vocabulary"]
        if vocabulary is not None:
            pipeline_cfg["vocabulary"] = vocabulary
    elif vocabulary is not None:
        raise ConfigError(
            f"The {task} pipeline ({pipeline_cfg.get('type')}) takes no vocabulary; give its "
            "query (a phrase, clicks ...) to predict instead."
        )
    pipeline = PIPELINES.build(pipeline_cfg)
    pipeline.config = cfg
    pipeline.meta = {"config": str(cfg.get("_source_", "")), "task": task}
    return pipeline


def build_vocab_free_pipeline(
    preset_or_config: str | os.PathLike | Mapping[str, Any] | None = None,
    db: str | os.PathLike | None = None,
    device: str | None = None,
    *,
    overrides: Iterable[str] = (),
    search: Mapping[str, Any] | None = None,
    task: str = "semantic",
    **kwargs: Any,
):
    """A vocabulary-free pipeline from a preset (``ovseg predict --vocab-free --db DIR``).

    The preset's semantic (or, with ``task="instance"``, instance) pipeline is built as usual;
    the search reads the config's ``database`` section (``{path: ..., k: ..., alpha: ...,
    max_ngram: ...}``; ``db`` replaces its path) and the optional ``vocab_free`` section
    (``mode``, ``grids`` ...) or, for instances, ``vocab_free_instance`` (``crop_classifier``);
    ``kwargs`` override them. ``search`` overrides search options.
    The result is a ``VocabFreeSegmenter`` or, for instances, a ``VocabFreeInstanceSegmenter``
    that names every SAM proposal by its own search (from ``pipelines.instance_sam`` when the
    config has that section, else ``pipelines.instance``).

    Raises:
        ConfigError: neither ``db`` nor the preset names a database.
        DatabaseError: the database is missing, damaged or built with another model.
    """
    from ovseg.cased.search import CasedSearch

    preset_or_config = DEFAULT_PRESET if preset_or_config is None else preset_or_config
    overrides = list(overrides)
    cfg = build_pipeline_config(preset_or_config, overrides)
    raw = to_container(cfg)
    section = raw.get("database") or {}
    section = {"path": section} if isinstance(section, str) else dict(section)
    section.update(search or {})
    if db is not None:
        section["path"] = str(db)
    path = section.pop("path", None) or section.pop("database", None)
    name = preset_or_config if isinstance(preset_or_config, str) else None
    if not path:
        raise ConfigError(
            f"{cfg.get('_source_', name)} names no text database; pass --db DIR (build one with "
            f"`ovseg db build --texts CORPUS --preset {name or 'PRESET'} --out DIR`)."
        )
    if task not in VOCAB_FREE_TASKS.values():
        raise ConfigError(f"--vocab-free works with the semantic and instance tasks, not {task!r}.")
    inner_task = task
    if task == "instance" and CLASS_AGNOSTIC_INSTANCE in (raw.get("pipelines") or {}):
        inner_task = CLASS_AGNOSTIC_INSTANCE
    inner = create_pipeline(preset_or_config, task=inner_task, overrides=overrides, device=device)
    pretrained = raw["pipeline"].get("backbone", {}).get("pretrained")
    searcher = CasedSearch(inner.backbone, path, pretrained=pretrained, preset=name, **section)
    if task == "instance":
        options = {**(raw.get("vocab_free_instance") or {}), **kwargs}
        pipeline = PIPELINES.build(
            {"type": "VocabFreeInstanceSegmenter", "instance": inner, "search": searcher, **options}
        )
    else:
        options = {**(raw.get("vocab_free") or {}), **kwargs}
        pipeline = PIPELINES.build(
            {"type": "VocabFreeSegmenter", "segmenter": inner, "search": searcher, **options}
        )
    cfg["database"] = {"path": str(searcher.database.path), **section}
    pipeline.config = cfg
    pipeline.meta = {"config": str(cfg.get("_source_", "")), "task": task}
    return pipeline


def build_video_pipeline(
    preset_or_config: str | os.PathLike | Mapping[str, Any] = DEFAULT_PRESET,
    vocabulary: Any = None,
    *,
    task: str = "video_instance",
    overrides: Iterable[str] = (),
    device: str | None = None,
    **video_kwargs: Any,
):
    """A ``VideoSegmenter`` over the preset's ``referring`` or ``instance`` pipeline.

    Its settings come from the config's optional ``video`` section (``propagation``,
    ``redetect_every``, ``match_threshold``, ``matching``, ``patience`` ...), then
    ``video_kwargs``; without a section the tracker re-detects on every frame
    (``propagation: redetect``).
    """
    if task not in VIDEO_TASKS:
        raise ConfigError(f"Video tasks are {', '.join(VIDEO_TASKS)}; got {task!r}.")
    base = VIDEO_TASKS[task]
    overrides = list(overrides)
    cfg = build_pipeline_config(preset_or_config, overrides, task=base)
    settings = {**(to_container(cfg).get("video") or {}), **video_kwargs}
    detector = create_pipeline(
        preset_or_config, vocabulary, task=base, overrides=overrides, device=device
    )
    pipeline = PIPELINES.build({"type": "VideoSegmenter", "detector": detector, **settings})
    cfg["video"] = settings
    cfg["task"] = task
    pipeline.config = cfg
    pipeline.meta = {"config": str(cfg.get("_source_", "")), "task": task}
    return pipeline
