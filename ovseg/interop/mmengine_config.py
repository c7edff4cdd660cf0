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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovseg.errors import ConfigError, MissingDependencyError, UnmappableConfigError
from ovseg.vocab.vocabulary import CLASS_DIR, read_class_file

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
DATALOADER_RUNTIME_KEYS = frozenset(
    {"batch_size", "num_workers", "persistent_workers", "sampler", "pin_memory", "drop_last"}
)


@dataclass(frozen=True)
class MethodSpec:
    """One reference segmentor: its ovseg name, ``__init__`` defaults and class-file separator."""

    method: str
    defaults: Mapping[str, Any]
    name_separator: str  # how its get_cls_idx splits a class line into names
    backbone_keys: frozenset[str] = field(default_factory=frozenset)


_COMMON = {"prob_thd": 0.0, "slide_stride": 112, "slide_crop": 224, "logit_scale": 40}
METHODS: dict[str, MethodSpec] = {
    # wangf3014/SCLIP clip_segmentor.py
    "CLIPForSegmentation": MethodSpec(
        "sclip",
        {**_COMMON, "area_thd": None, "pamr_steps": 0, "pamr_stride": (8, 16)},
        ", ",
        frozenset({"clip_path"}),
    ),
    # sinahmr/NACLIP naclip.py
    "NACLIP": MethodSpec(
        "naclip",
        {
            **_COMMON,
            "pamr_steps": 10,
            "pamr_stride": (8, 16),
            "arch": "reduced",
            "attn_strategy": "naclip",
            "gaussian_std": 5.0,
        },
        ", ",
        frozenset({"clip_path", "arch", "attn_strategy", "gaussian_std"}),
    ),
    # mc-lan/ClearCLIP clearclip_segmentor.py
    "ClearCLIPSegmentation": MethodSpec(
        "clearclip",
        {
            "prob_thd": 0.0,
            "logit_scale": 50,
            "slide_stride": 224,
            "slide_crop": 448,
            "ignore_residual": True,
        },
        ",",
        frozenset({"clip_type", "vit_type", "model_type", "ignore_residual"}),
    ),  # fmt: skip
    # mc-lan/ProxyCLIP proxyclip_segmentor.py
    "ProxyCLIPSegmentation": MethodSpec(
        "proxyclip",
        {**_COMMON, "slide_crop": 336, "beta": 1.2, "gamma": 3.0, "checkpoint": None},
        "; ",
        frozenset({"clip_type", "model_type", "vfm_model", "checkpoint", "beta", "gamma"}),
    ),
}
SHARED_MODEL_KEYS = frozenset(
    {"type", "name_path", "prob_thd", "logit_scale", "slide_stride", "slide_crop", "device",
     "bg_idx"}
)  # fmt: skip
METHOD_EXTRA_KEYS = {
    "CLIPForSegmentation": frozenset({"pamr_steps", "pamr_stride", "area_thd"}),
    "NACLIP": frozenset({"pamr_steps", "pamr_stride"}),
    "ClearCLIPSegmentation": frozenset(),
    "ProxyCLIPSegmentation": frozenset(),
}

# ClearCLIP's model_type -> ovseg dense mode (open_clip/transformer.py custom_attn)
CLEARCLIP_MODES = {"vanilla": "vanilla", "MaskCLIP": "maskclip", "SCLIP": "sclip",
                   "ClearCLIP": "clearclip"}  # fmt: skip
# ClearCLIP's clip_type -> (ViT-B weights, ViT-L weights) as its segmentor picks them
CLEARCLIP_WEIGHTS = {
    "CLIP": (("ViT-B-16", "openai"), ("ViT-L-14", "openai")),
    "OpenCLIP": (("ViT-B-16", "laion2b_s34b_b88k"), ("ViT-L-14", "laion2b_s32b_b82k")),
    "MetaCLIP": (("ViT-B-16-quickgelu", "metaclip_fullcc"), ("ViT-L-14-quickgelu", "metaclip_fullcc")),
}  # fmt: skip
# mmseg datasets whose label of ``<name>.jpg`` is ``<name>.png`` (others add suffixes such as
# ``_labelTrainIds.png``): only these can be read from other folders by ovseg's FolderDataset
SAME_NAME_LABELS = frozenset(
    {"PascalVOCDataset", "PascalVOC20Dataset", "PascalContextDataset", "PascalContext60Dataset",
     "PascalContext59Dataset", "ADE20KDataset"}
)  # fmt: skip
# ProxyCLIP's vfm_model -> the proxy model its segmentor loads
PROXY_MODELS = {"dino": "dino_vitb8", "dinov2": "dinov2_vitb14_reg", "sam": "sam_vit_b",
                "mae": "mae_vitb16"}  # fmt: skip
# ovseg's dense modes: does the modified last block keep its residual / FFN by default?
MODE_KEEPS = {"vanilla": True, "maskclip": True, "sclip": True, "clearclip": False,
              "naclip": False}  # fmt: skip


@dataclass(frozen=True)
class DatasetSpec:
    """An mmseg dataset type: the ovseg reader, its fixed arguments, benchmark and layout."""

    reader: dict[str, Any]
    benchmark: str | None
    img_prefix: str  # the standard folders under data_root (``{split}`` filled in)
    ann_prefix: str
    split_file: str | None  # ``ann_file`` pattern, None when the split is a folder name
    splits: tuple[str, ...]


_VOC = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/{split}.txt")
_PC = ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext/{split}.txt")
_COCO = ("images/{split}", "annotations/{split}", None)
DATASETS_MMSEG: dict[str, DatasetSpec] = {
    "PascalVOCDataset": DatasetSpec(
        {"type": "PascalVOCDataset", "num_classes": 21}, "voc21", *_VOC, ("val", "train")
    ),
    "PascalVOC20Dataset": DatasetSpec(
        {"type": "PascalVOCDataset", "num_classes": 20}, "voc20", *_VOC, ("val", "train")
    ),
    "PascalContextDataset": DatasetSpec(
        {"type": "PascalContextDataset", "num_classes": 60}, "pc60", *_PC, ("val", "train")
    ),
    "PascalContext60Dataset": DatasetSpec(
        {"type": "PascalContextDataset", "num_classes": 60}, "pc60", *_PC, ("val", "train")
    ),
    "PascalContext59Dataset": DatasetSpec(
        {"type": "PascalContextDataset", "num_classes": 59}, "pc59", *_PC, ("val", "train")
    ),
    "COCOObjectDataset": DatasetSpec(
        {"type": "COCOObjectDataset"}, "object", *_COCO, ("val2017", "train2017")
    ),
    "COCOStuffDataset": DatasetSpec(
        {"type": "COCOStuffDataset"}, "stuff", *_COCO, ("val2017", "train2017")
    ),
    "CityscapesDataset": DatasetSpec(
        {"type": "CityscapesDataset"},
        "city",
        "leftImg8bit/{split}",
        "gtFine/{split}",
        None,
        ("val", "train"),
    ),  # fmt: skip
    # ProxyCLIP's 847- and 459-class sets, as detectron2's preparation scripts lay them out
    "ADE20K847Dataset": DatasetSpec(
        {"type": "ADE20K847Dataset"},
        None,
        "images_detectron2/{split}",
        "annotations_detectron2/{split}",
        "{split}.txt",
        ("validation", "training"),
    ),  # fmt: skip
    "PascalContext459Dataset": DatasetSpec(
        {"type": "PascalContextDataset", "num_classes": 459},
        None,
        "JPEGImages",
        "annotations_detectron2/pc459_{split}",
        "ImageSets/SegmentationContext/{split}.txt",
        ("val", "train"),
    ),  # fmt: skip
    "ADE20KDataset": DatasetSpec(
        {"type": "ADE20KDataset"},
        "ade",
        "images/{split}",
        "annotations/{split}",
        None,
        ("validation", "training"),
    ),  # fmt: skip
}


def _refuse(source: str, key: str, value: Any, why: str) -> UnmappableConfigError:
    return UnmappableConfigError(f"{source}: cannot map {key} = {value!r}: {why}")


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


# ----------------------------------------------------------------------------- model
def _clip_name(name: str, source: str, key: str) -> str:
    """OpenAI CLIP names (``ViT-B/16``, ``ViT-L/14@336px``, ``RN50``) -> open_clip's."""
    if not isinstance(name, str) or not name:
        raise _refuse(source, key, name, "expected a CLIP model name such as 'ViT-B/16'.")
    return name.replace("/", "-").replace("@336px", "-336")


def _backbone(type_: str, model: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``pipeline.backbone`` for the reference segmentor ``type_`` with settings ``model``."""
    if type_ == "CLIPForSegmentation":
        return {
            "type": "ClipBackbone",
            "model_name": _clip_name(model.get("clip_path"), source, "model.clip_path"),
            "pretrained": "openai",
            "dense_mode": "sclip",
            "templates": "imagenet80",
        }
    if type_ == "NACLIP":
        strategy = model["attn_strategy"]
        if strategy not in ("naclip", "vanilla"):
            raise _refuse(
                source, "model.attn_strategy", strategy,
                "ovseg has NACLIP's 'naclip' and 'vanilla' attention only.",
            )  # fmt: skip
        if model["arch"] not in ("reduced", "vanilla"):
            raise _refuse(source, "model.arch", model["arch"], "NACLIP knows 'reduced', 'vanilla'.")
        backbone = {
            "type": "ClipBackbone",
            "model_name": _clip_name(model.get("clip_path"), source, "model.clip_path"),
            "pretrained": "openai",
            "dense_mode": strategy,
            "templates": "imagenet80",
        }
        if strategy == "naclip":
            backbone["naclip_std"] = float(model["gaussian_std"])
        _set_keeps(backbone, model["arch"] == "vanilla")
        return backbone
    if type_ == "ClearCLIPSegmentation":
        clip_type, vit_type, mode = (
            model.get("clip_type"),
            model.get("vit_type"),
            model.get("model_type"),
        )
        if clip_type not in CLEARCLIP_WEIGHTS:
            raise _refuse(
                source, "model.clip_type", clip_type,
                f"ovseg builds {', '.join(CLEARCLIP_WEIGHTS)} (BLIP and ALIP are not open_clip "
                "models).",
            )  # fmt: skip
        if not isinstance(vit_type, str) or not ("B" in vit_type or "L" in vit_type):
            raise _refuse(source, "model.vit_type", vit_type, "expected a ViT-B or ViT-L name.")
        if mode not in CLEARCLIP_MODES:
            raise _refuse(
                source, "model.model_type", mode,
                f"ovseg has the last-block variants {', '.join(CLEARCLIP_MODES)} (not GEM).",
            )  # fmt: skip
        # the segmentor tests 'B' first, as here
        model_name, pretrained = CLEARCLIP_WEIGHTS[clip_type][0 if "B" in vit_type else 1]
        backbone = {
            "type": "ClipBackbone",
            "model_name": model_name,
            "pretrained": pretrained,
            "dense_mode": CLEARCLIP_MODES[mode],
            "templates": "imagenet80",
        }
        _set_keeps(backbone, not model["ignore_residual"])
        return backbone
    # ProxyCLIPSegmentation
    vfm = model.get("vfm_model")
    if vfm not in PROXY_MODELS:
        raise _refuse(
            source, "model.vfm_model", vfm, f"ProxyCLIP's proxies are {', '.join(PROXY_MODELS)}."
        )
    pretrained = model.get("clip_type")
    if not isinstance(pretrained, str) or not pretrained:
        raise _refuse(source, "model.clip_type", pretrained, "expected an open_clip weight tag.")
    return {
        "type": "ProxyClipBackbone",
        "model_name": _clip_name(model.get("model_type"), source, "model.model_type"),
        "pretrained": pretrained,
        "proxy_model": PROXY_MODELS[vfm],
        "proxy_checkpoint": model["checkpoint"],
        "beta": float(model["beta"]),
        "gamma": float(model["gamma"]),
        "templates": "imagenet80",
    }


def _set_keeps(backbone: dict[str, Any], keep: bool) -> None:
    """Write keep_residual / keep_ffn only where they differ from the dense mode's default."""
    if MODE_KEEPS[backbone["dense_mode"]] != keep:
        backbone["keep_residual"] = keep
        backbone["keep_ffn"] = keep


def _number(value: Any, source: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(source, key, value, "expected a number.")
    return float(value)


def _pipeline(type_: str, model: Mapping[str, Any], source: str) -> dict[str, Any]:
    spec = METHODS[type_]
    allowed = SHARED_MODEL_KEYS | spec.backbone_keys | METHOD_EXTRA_KEYS[type_]
    if type_ == "ProxyCLIPSegmentation":
        allowed |= {"beta", "gamma", "checkpoint"}
    for key in model:
        if key not in allowed:
            raise _refuse(
                source, f"model.{key}", model[key],
                f"{type_} in ovseg takes {', '.join(sorted(allowed))}.",
            )  # fmt: skip
    settings = {**spec.defaults, **model}
    crop = settings["slide_crop"]
    stride = settings["slide_stride"]
    for key, value in (("model.slide_crop", crop), ("model.slide_stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _refuse(source, key, value, "expected an integer number of pixels.")
    whole = crop <= 0
    inference = {
        "mode": "whole" if whole else "slide",
        # in whole mode the window settings are unused; keep the method's default window
        "crop_size": int(spec.defaults["slide_crop"] if whole else crop),
        "stride": int(stride),
        "batch_size": 16,
    }
    prob = _number(settings["prob_thd"], source, "model.prob_thd")
    area = settings.get("area_thd")
    area = 0.0 if area is None else _number(area, source, "model.area_thd")
    background = None
    if prob > 0 or settings.get("area_thd") is not None:
        background = 0  # the reference code sends such pixels to class 0
    if settings.get("bg_idx") is not None:
        background = settings["bg_idx"]
        if isinstance(background, bool) or not isinstance(background, int) or background < 0:
            raise _refuse(source, "model.bg_idx", background, "expected a class index >= 0.")
    steps = settings.get("pamr_steps", 0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise _refuse(source, "model.pamr_steps", steps, "expected an integer >= 0.")
    pamr = None
    if steps > 0:
        dilations = settings["pamr_stride"]
        if not isinstance(dilations, (list, tuple)) or not all(
            isinstance(d, int) and d > 0 for d in dilations
        ):
            raise _refuse(
                source, "model.pamr_stride", dilations, "expected a list of dilations (ints)."
            )
        pamr = {"num_iter": steps, "dilations": [int(d) for d in dilations]}
    return {
        "type": "SemanticSegmenter",
        "backbone": _backbone(type_, settings, source),
        "logit_scale": _number(settings["logit_scale"], source, "model.logit_scale"),
        "inference": inference,
        "postprocess": {
            "prob_threshold": prob,
            "area_threshold": area,
            "background_index": background,
            "pamr": pamr,
        },
    }


# ----------------------------------------------------------------------------- test pipeline
def _resize(transforms: Sequence[Mapping[str, Any]], source: str) -> tuple[int, int]:
    """``(short_side, max_long_side)`` of the test pipeline's keep-ratio ``Resize``."""
    found: tuple[int, int] | None = None
    for index, step in enumerate(transforms):
        kind = step.get("type")
        where = f"test_pipeline[{index}]"
        if kind in ("LoadImageFromFile", "PackSegInputs", "ImageToTensor", "Collect"):
            continue
        if kind in ("LoadAnnotations", "MyLoadAnnotations"):  # ProxyCLIP's, for 16-bit labels
            unknown = set(step) - {"type", "reduce_zero_label"}
            if unknown:
                raise _refuse(source, where, dict(step), "LoadAnnotations with other options.")
            continue
        if kind == "MultiScaleFlipAug":  # mmseg 0.x wraps the test transforms
            scale = step.get("img_scale")
            if step.get("flip") or step.get("img_ratios") not in (None, [1.0], 1.0):
                raise _refuse(
                    source, where, dict(step),
                    "ovseg tests one scale without flipping (no test-time augmentation).",
                )  # fmt: skip
            inner = [dict(t) for t in step.get("transforms", [])]
            for t in inner:
                if t.get("type") == "Resize":
                    t.setdefault("scale", scale)
            found = _resize(inner, source)
            continue
        if kind == "Normalize" or kind == "RandomFlip" and not step.get("prob"):
            continue  # the segmentor normalises; a flip with prob 0 never flips
        if kind != "Resize":
            raise _refuse(
                source, where, dict(step),
                "ovseg's test pipeline is load -> keep-ratio resize -> model; this transform "
                "has no equivalent.",
            )  # fmt: skip
        unknown = set(step) - {"type", "scale", "img_scale", "keep_ratio"}
        if unknown or not step.get("keep_ratio"):
            raise _refuse(
                source, where, dict(step), "only Resize(scale=(long, short), keep_ratio=True)."
            )
        scale = step.get("scale", step.get("img_scale"))
        if (
            not isinstance(scale, (list, tuple))
            or len(scale) != 2
            or not all(isinstance(s, int) and s > 0 for s in scale)
        ):
            raise _refuse(source, f"{where}.scale", scale, "expected two positive integers.")
        # mmcv's keep-ratio rescale: long side <= max(scale), short side <= min(scale)
        found = (min(scale), max(scale))
    if found is None:
        raise UnmappableConfigError(
            f"{source}: the test pipeline has no Resize(scale=..., keep_ratio=True); ovseg needs "
            "the short side the method was evaluated at."
        )
    return found


# ----------------------------------------------------------------------------- classes
def _find_name_file(name_path: str, config_path: Path) -> Path:
    """``name_path`` as the reference code opens it: from the working directory, which for the
    method repositories is the folder above ``configs/``; the config's folders are tried too."""
    candidate = Path(name_path).expanduser()
    if candidate.is_absolute():
        places = [candidate]
    else:
        places = [Path.cwd() / candidate] + [
            folder / candidate for folder in config_path.resolve().parents
        ]
    for place in places:
        if place.is_file():
            return place
    raise ConfigError(
        f"{config_path}: model.name_path {name_path!r} was found neither in the working "
        f"directory nor above {config_path.parent}. Run from the method's repository root "
        "(where its eval.py runs) or write the absolute path in the config."
    )


def read_reference_class_file(path: Path, separator: str) -> list[tuple[str, ...]]:
    """Names per class of a reference class file (one class per line, split by ``separator``
    as the method's ``get_cls_idx`` does; names stripped, trailing empty lines dropped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    classes = []
    for number, line in enumerate(lines, 1):
        names = tuple(n.strip() for n in line.split(separator.strip()) if n.strip())
        if not names:
            raise ConfigError(f"{path}: line {number} names no class.")
        classes.append(names)
    return classes


def _packaged_classes() -> dict[str, list[tuple[str, ...]]]:
    return {
        path.name: [names for _, names in read_class_file(path)]
        for path in sorted(CLASS_DIR.glob("*.txt"))
    }


def _vocabulary(classes: list[tuple[str, ...]], method: str) -> dict[str, Any]:
    """A packaged class file with exactly these names per class (the method's own variant,
    ``*_<method>.txt``, first), else the names inline."""
    matches = [name for name, packaged in _packaged_classes().items() if packaged == classes]
    if matches:
        matches.sort(key=lambda n: (not n.endswith(f"_{method}.txt"), len(n), n))
        return {"file": matches[0]}
    return {"names": [list(names) for names in classes]}


# ----------------------------------------------------------------------------- dataset
def _dataset_section(
    cfg: Mapping[str, Any], source: str, load_reduce: bool = False
) -> tuple[dict[str, Any] | None, Any]:
    """``(data.test reader config or None when data_root is empty, benchmark key)``;
    ``load_reduce``: the test pipeline's LoadAnnotations reduces zero labels."""
    loader = cfg.get("test_dataloader")
    legacy = cfg.get("data", {}).get("test") if isinstance(cfg.get("data"), Mapping) else None
    if loader is not None:
        unknown = set(loader) - DATALOADER_RUNTIME_KEYS - {"dataset"}
        if unknown:
            key = sorted(unknown)[0]
            raise _refuse(source, f"test_dataloader.{key}", loader[key], "no ovseg equivalent.")
        dataset = dict(loader.get("dataset") or {})
        img_prefix = (dataset.get("data_prefix") or {}).get("img_path", "")
        ann_prefix = (dataset.get("data_prefix") or {}).get("seg_map_path", "")
        split_file = dataset.get("ann_file") or None
        known = {"type", "data_root", "data_prefix", "ann_file", "pipeline",
                 "reduce_zero_label", "test_mode", "img_suffix", "seg_map_suffix"}  # fmt: skip
    elif legacy is not None:
        dataset = dict(legacy)
        img_prefix, ann_prefix = dataset.get("img_dir", ""), dataset.get("ann_dir", "")
        split_file = dataset.get("split") or None
        known = {"type", "data_root", "img_dir", "ann_dir", "split", "pipeline",
                 "reduce_zero_label", "test_mode", "img_suffix", "seg_map_suffix"}  # fmt: skip
    else:
        raise UnmappableConfigError(
            f"{source}: no test_dataloader (mmseg 1.x) or data.test (0.x) section; ovseg needs "
            "the test dataset to know the benchmark."
        )
    for key in dataset:
        if key not in known:
            raise _refuse(source, f"dataset.{key}", dataset[key], "no ovseg equivalent.")
    type_ = dataset.get("type", cfg.get("dataset_type"))
    spec = DATASETS_MMSEG.get(type_)
    root = dataset.get("data_root", cfg.get("data_root")) or ""
    if spec is None:
        raise _refuse(
            source, "dataset.type", type_,
            f"ovseg reads {', '.join(sorted(DATASETS_MMSEG))} (or a folder dataset).",
        )  # fmt: skip
    standard = None  # the split whose standard folders the config names, if any
    for split in spec.splits:
        expected = (
            spec.img_prefix.format(split=split),
            spec.ann_prefix.format(split=split),
            spec.split_file.format(split=split) if spec.split_file else None,
        )
        if (img_prefix.rstrip("/"), ann_prefix.rstrip("/"), split_file) == expected:
            standard = split
            break
    # the benchmark is the standard evaluation split (the first listed) of the standard layout
    benchmark = spec.benchmark if standard == spec.splits[0] else None
    if not root:
        return None, benchmark  # the reference configs leave data_root for the user
    if standard is not None:
        return {**spec.reader, "root": str(root), "split": standard}, benchmark
    suffix = dataset.get("seg_map_suffix", ".png")
    if split_file or type_ not in SAME_NAME_LABELS or suffix != ".png":
        raise _refuse(
            source, "dataset folders", (img_prefix, ann_prefix, split_file),
            f"{type_} in ovseg reads its standard layout "
            f"({spec.img_prefix}, {spec.ann_prefix}, {spec.split_file or 'no split file'}); "
            "other folders are read only where each label is <image name>.png, without a split "
            "file.",
        )  # fmt: skip
    # images and label maps in other folders, paired by file name: ovseg's folder reader
    reduce = bool(dataset.get("reduce_zero_label", False) or load_reduce)
    return (
        {"type": "FolderDataset", "root": str(root), "images": img_prefix,
         "labels": ann_prefix, "reduce_zero_label": reduce},
        None,
    )  # fmt: skip


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
        raise _refuse(
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
            raise _refuse(
                source, "test_evaluator", dict(evaluator),
                "ovseg evaluates mIoU the way IoUMetric(iou_metrics=['mIoU']) does.",
            )  # fmt: skip
    model = dict(cfg.get("model") or {})
    type_ = model.get("type")
    if type_ not in METHODS:
        raise _refuse(
            source, "model.type", type_,
            f"ovseg imports the segmentors {', '.join(METHODS)} (SCLIP, NACLIP, ClearCLIP, "
            "ProxyCLIP).",
        )  # fmt: skip
    if "name_path" not in model:
        raise UnmappableConfigError(f"{source}: model.name_path (the class-name file) is not set.")
    pipeline = _pipeline(type_, model, source)
    loader = cfg.get("test_dataloader") or {}
    transforms = (loader.get("dataset") or {}).get("pipeline") or cfg.get("test_pipeline")
    if transforms is None and isinstance(cfg.get("data"), Mapping):
        transforms = (cfg["data"].get("test") or {}).get("pipeline")
    short, long = _resize(transforms or [], source)
    pipeline["inference"] = {"short_side": short, "max_long_side": long, **pipeline["inference"]}
    spec = METHODS[type_]
    name_file = _find_name_file(model["name_path"], config_path)
    classes = read_reference_class_file(name_file, spec.name_separator)
    vocabulary = _vocabulary(classes, spec.method)
    load_reduce = any(
        t.get("type") in ("LoadAnnotations", "MyLoadAnnotations") and t.get("reduce_zero_label")
        for t in transforms or []
    )
    data, benchmark = _dataset_section(cfg, source, load_reduce)
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
