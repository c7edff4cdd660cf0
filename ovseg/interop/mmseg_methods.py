"""The four training-free segmentors of mmseg configs, and their class-name files, in ovseg terms.

Used by :mod:`ovseg.interop.mmengine_config`: each segmentor's ``__init__`` defaults (read from the
SCLIP, NACLIP, ClearCLIP and ProxyCLIP repositories), the mapping of its keyword arguments onto an
ovseg ``SemanticSegmenter`` section, and how its ``get_cls_idx`` reads a class-name file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovseg.errors import ConfigError, UnmappableConfigError
from ovseg.vocab.vocabulary import CLASS_DIR, read_class_file


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
PROXY_MODELS = {"dino": "dino_vitb8", "dinov2": "dinov2_vitb14_reg", "sam": "sam_vit_b",
                "mae": "mae_vitb16"}  # fmt: skip
# ovseg's dense modes: does the modified last block keep its residual / FFN by default?
MODE_KEEPS = {"vanilla": True, "maskclip": True, "sclip": True, "clearclip": False,
              "naclip": False}  # fmt: skip


def refuse(source: str, key: str, value: Any, why: str) -> UnmappableConfigError:
    return UnmappableConfigError(f"{source}: cannot map {key} = {value!r}: {why}")


# ----------------------------------------------------------------------------- model
def _clip_name(name: str, source: str, key: str) -> str:
    """OpenAI CLIP names (``ViT-B/16``, ``ViT-L/14@336px``, ``RN50``) -> open_clip's."""
    if not isinstance(name, str) or not name:
        raise refuse(source, key, name, "expected a CLIP model name such as 'ViT-B/16'.")
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
            raise refuse(
                source, "model.attn_strategy", strategy,
                "ovseg has NACLIP's 'naclip' and 'vanilla' attention only.",
            )  # fmt: skip
        if model["arch"] not in ("reduced", "vanilla"):
            raise refuse(source, "model.arch", model["arch"], "NACLIP knows 'reduced', 'vanilla'.")
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
            raise refuse(
                source, "model.clip_type", clip_type,
                f"ovseg builds {', '.join(CLEARCLIP_WEIGHTS)} (BLIP and ALIP are not open_clip "
                "models).",
            )  # fmt: skip
        if not isinstance(vit_type, str) or not ("B" in vit_type or "L" in vit_type):
            raise refuse(source, "model.vit_type", vit_type, "expected a ViT-B or ViT-L name.")
        if mode not in CLEARCLIP_MODES:
            raise refuse(
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
        raise refuse(
            source, "model.vfm_model", vfm, f"ProxyCLIP's proxies are {', '.join(PROXY_MODELS)}."
        )
    pretrained = model.get("clip_type")
    if not isinstance(pretrained, str) or not pretrained:
        raise refuse(source, "model.clip_type", pretrained, "expected an open_clip weight tag.")
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
        raise refuse(source, key, value, "expected a number.")
    return float(value)


def pipeline_section(type_: str, model: Mapping[str, Any], source: str) -> dict[str, Any]:
    spec = METHODS[type_]
    allowed = SHARED_MODEL_KEYS | spec.backbone_keys | METHOD_EXTRA_KEYS[type_]
    if type_ == "ProxyCLIPSegmentation":
        allowed |= {"beta", "gamma", "checkpoint"}
    for key in model:
        if key not in allowed:
            raise refuse(
                source, f"model.{key}", model[key],
                f"{type_} in ovseg takes {', '.join(sorted(allowed))}.",
            )  # fmt: skip
    settings = {**spec.defaults, **model}
    crop = settings["slide_crop"]
    stride = settings["slide_stride"]
    for key, value in (("model.slide_crop", crop), ("model.slide_stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse(source, key, value, "expected an integer number of pixels.")
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
            raise refuse(source, "model.bg_idx", background, "expected a class index >= 0.")
    steps = settings.get("pamr_steps", 0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise refuse(source, "model.pamr_steps", steps, "expected an integer >= 0.")
    pamr = None
    if steps > 0:
        dilations = settings["pamr_stride"]
        if not isinstance(dilations, (list, tuple)) or not all(
            isinstance(d, int) and d > 0 for d in dilations
        ):
            raise refuse(
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


# ----------------------------------------------------------------------------- classes
def find_name_file(name_path: str, config_path: Path) -> Path:
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


def vocabulary_section(classes: list[tuple[str, ...]], method: str) -> dict[str, Any]:
    """A packaged class file with exactly these names per class (the method's own variant,
    ``*_<method>.txt``, first), else the names inline."""
    matches = [name for name, packaged in _packaged_classes().items() if packaged == classes]
    if matches:
        matches.sort(key=lambda n: (not n.endswith(f"_{method}.txt"), len(n), n))
        return {"file": matches[0]}
    return {"names": [list(names) for names in classes]}
