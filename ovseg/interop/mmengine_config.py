"""Import a training-free method's mmseg evaluation config (``configs/cfg_*.py``) as an ovseg preset.

The SCLIP, NACLIP, ClearCLIP and ProxyCLIP repositories evaluate with mmseg: one Python config per
benchmark that sets the segmentor's keyword arguments (``model``), the test-time ``Resize`` and
the dataset. :func:`import_mmseg_config` reads such a file with mmengine's ``Config.fromfile``
(which runs the file's Python code and its ``_base_`` files, as mmengine itself does) and maps
every setting onto an ovseg preset:

==========================  ===============================================================
mmseg config                ovseg preset
==========================  ===============================================================
``model.type``              the method: ``CLIPForSegmentation`` (SCLIP), ``NACLIP``,
                            ``ClearCLIPSegmentation``, ``ProxyCLIPSegmentation``
CLIP name / weights         ``pipeline.backbone.model_name`` / ``pretrained``
method's attention options  ``dense_mode``, ``keep_residual``, ``keep_ffn``, ``naclip_std``,
                            ProxyCLIP's ``proxy_model``, ``proxy_checkpoint``, ``beta``, ``gamma``
``slide_crop``, ``slide_stride``  ``inference.crop_size`` / ``stride``; ``slide_crop`` <= 0:
                            ``inference.mode: whole``
``Resize(scale=(L, S), keep_ratio=True)``  ``inference.max_long_side: L``, ``short_side: S``
``logit_scale``             ``pipeline.logit_scale``
``prob_thd``, ``area_thd``  ``postprocess.prob_threshold`` / ``area_threshold``; with either
                            set, pixels go to class 0 as in the reference code
                            (``background_index: 0``; ``bg_idx`` overrides the index)
``pamr_steps``, ``pamr_stride``  ``postprocess.pamr: {num_iter, dilations}`` (0 steps: off)
``name_path``               ``vocabulary``: a packaged class file when its classes and names are
                            the same, else the names inline
dataset type / ``data_root`` / prefixes  ``data.test`` (an ovseg reader) and ``benchmark``
==========================  ===============================================================

Each method's defaults are the keyword defaults of its segmentor's ``__init__`` (read from the
repositories), so a key the config leaves out means what it means there. A key that has no
ovseg equivalent (another ``model_type``, a test-time flip, a training section ...) raises
:class:`~ovseg.errors.UnmappableConfigError` naming it; runtime-only keys (logging, hooks,
visualiser, dataloader workers) are dropped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ovseg.errors import ConfigError, MissingDependencyError, UnmappableConfigError
from ovseg.interop.mmseg_datasets import dataset_section, resize_settings
from ovseg.interop.mmseg_methods import (
    METHODS,
    find_name_file,
    pipeline_section,
    read_reference_class_file,
    refuse,
    vocabulary_section,
)

# top-level keys that only steer mmengine's runner (logging, hooks, devices): nothing to map
RUNTIME_KEYS = frozenset(
    {
        "default_scope", "env_cfg", "vis_backends", "visualizer", "log_processor", "log_level",
        "load_from", "resume", "test_cfg", "default_hooks", "launcher", "work_dir", "randomness",
        "dist_params", "workflow", "cudnn_benchmark", "checkpoint_config", "log_config",
        "opencv_num_threads", "mp_start_method",
    }
)  # fmt: skip
MAPPED_KEYS = frozenset(
    {"model", "test_pipeline", "test_dataloader", "test_evaluator", "dataset_type", "data_root"}
)
LEGACY_KEYS = frozenset({"data", "img_norm_cfg", "evaluation"})  # mmseg 0.x layout


# ----------------------------------------------------------------------------- reading
def read_mmengine_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config at ``path`` as plain containers, read by mmengine's ``Config.fromfile``.

    ``Config.fromfile`` runs the file's Python code (and its ``_base_`` files): call this only on
    files you would run yourself. ``custom_imports`` are not imported.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist or is not a file; give an mmseg config (.py).")
    if path.suffix != ".py":
        raise ConfigError(
            f"{path} is not a Python config; `ovseg config import` reads mmengine/mmseg .py "
            "configs (ovseg presets are YAML already)."
        )
    try:
        from mmengine.config import Config
    except ImportError as exc:
        raise MissingDependencyError(
            "Reading mmseg configs needs mmengine: pip install 'ovseg[mmseg]' (or mmengine)."
        ) from exc
    try:
        cfg = Config.fromfile(str(path), import_custom_modules=False)
    except Exception as exc:  # noqa: BLE001 - the file is user code: any error can come out
        raise ConfigError(
            f"mmengine could not read {path}: {type(exc).__name__}: {exc}. Check that the file "
            "and its _base_ files exist and run."
        ) from exc
    return cfg.to_dict()


# ----------------------------------------------------------------------------- entry point
def mmseg_config_to_preset(
    cfg: Mapping[str, Any], config_path: str | os.PathLike
) -> dict[str, Any]:
    """Map a read mmseg config (plain containers) onto an ovseg preset dict.

    ``config_path`` locates ``name_path`` and names the source in messages.
    """
    config_path = Path(config_path)
    source = str(config_path)
    for key in cfg:
        if key in RUNTIME_KEYS or key in MAPPED_KEYS or key in LEGACY_KEYS:
            continue
        raise refuse(
            source, key, cfg[key],
            "not a setting of a training-free mmseg evaluation config (model, test_pipeline, "
            "test_dataloader, test_evaluator, dataset_type, data_root).",
        )  # fmt: skip
    evaluator = cfg.get("test_evaluator") or (cfg.get("evaluation") or None)
    if evaluator is not None:
        metrics = evaluator.get("iou_metrics", evaluator.get("metric", ["mIoU"]))
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        kind = evaluator.get("type", "IoUMetric")
        if kind != "IoUMetric" or not set(metrics) <= {"mIoU"}:
            raise refuse(
                source, "test_evaluator", dict(evaluator),
                "ovseg evaluates mIoU the way IoUMetric(iou_metrics=['mIoU']) does.",
            )  # fmt: skip
    model = dict(cfg.get("model") or {})
    type_ = model.get("type")
    if type_ not in METHODS:
        raise refuse(
            source, "model.type", type_,
            f"ovseg imports the segmentors {', '.join(METHODS)} (SCLIP, NACLIP, ClearCLIP, "
            "ProxyCLIP).",
        )  # fmt: skip
    if "name_path" not in model:
        raise UnmappableConfigError(f"{source}: model.name_path (the class-name file) is not set.")
    pipeline = pipeline_section(type_, model, source)
    loader = cfg.get("test_dataloader") or {}
    transforms = (loader.get("dataset") or {}).get("pipeline") or cfg.get("test_pipeline")
    if transforms is None and isinstance(cfg.get("data"), Mapping):
        transforms = (cfg["data"].get("test") or {}).get("pipeline")
    short, long = resize_settings(transforms or [], source)
    pipeline["inference"] = {"short_side": short, "max_long_side": long, **pipeline["inference"]}
    spec = METHODS[type_]
    name_file = find_name_file(model["name_path"], config_path)
    classes = read_reference_class_file(name_file, spec.name_separator)
    vocabulary = vocabulary_section(classes, spec.method)
    load_reduce = any(
        t.get("type") in ("LoadAnnotations", "MyLoadAnnotations") and t.get("reduce_zero_label")
        for t in transforms or []
    )
    data, benchmark = dataset_section(cfg, source, load_reduce)
    preset: dict[str, Any] = {
        "pipeline": pipeline,
        "vocabulary": vocabulary,
        "benchmark": benchmark,
    }
    if data is not None:
        if "file" in vocabulary:
            data["class_file"] = vocabulary["file"]
        elif data["type"] == "FolderDataset":
            raise UnmappableConfigError(
                f"{source}: the folder dataset needs its classes as an ovseg class file, and "
                f"{name_file} matches no packaged one. Write it as one class per line (names "
                "after commas), then set data.test.class_file in the imported preset; or import "
                "without data_root and add the data section yourself."
            )
        preset["data"] = {"test": data}
    return preset


def import_mmseg_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read the mmseg config at ``path`` (running its code, see :func:`read_mmengine_config`) and
    return the ovseg preset dict (``pipeline``, ``vocabulary``, ``benchmark``, maybe ``data``)."""
    return mmseg_config_to_preset(read_mmengine_config(path), path)
