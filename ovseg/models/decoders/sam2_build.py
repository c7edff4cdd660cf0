"""SAM 2.1 models from the ``sam2`` package's configs, loaded through ``ovseg.weights``.

``build_sam2_model(model_type, checkpoint, overrides)`` reads one of sam2's own model configs
(``configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml`` inside the installed package) or a YAML file in
the same layout, adds the post-processing that ``sam2.build_sam.build_sam2`` adds by default
(fall back to multimask output when the single mask is unstable: delta 0.05, threshold 0.98),
applies ``overrides`` (dotted keys, e.g. ``{"model.image_size": 512}``) and instantiates the
config's ``model`` node as ``build_sam2`` does (hydra ``instantiate``, recursive). sam2 never
reads the checkpoint: the official ``sam2.1_hiera_*.pt`` files (a dict ``{"model": state_dict}``)
or ``.safetensors`` files are loaded strictly through :func:`ovseg.weights.load_state_dict`,
so missing or unexpected keys raise :class:`~ovseg.errors.CheckpointError` naming them.

Off-GPU the package installs without its CUDA extension: ``SAM2_BUILD_CUDA=0 pip install sam2``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ovseg.errors import ConfigError, MissingDependencyError, WeightsNotFoundError
from ovseg.models.decoders.sam_build import load_sam_weights
from ovseg.models.decoders.sam_weights import resolve_checkpoint_file

_RELEASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"

#: The SAM 2.1 release: config inside the sam2 package, checkpoint file, Hugging Face repo.
SAM2_MODELS: dict[str, dict[str, str]] = {
    "sam2.1_hiera_t": {
        "config": "configs/sam2.1/sam2.1_hiera_t.yaml",
        "file": "sam2.1_hiera_tiny.pt",
        "hf_repo": "facebook/sam2.1-hiera-tiny",
    },
    "sam2.1_hiera_s": {
        "config": "configs/sam2.1/sam2.1_hiera_s.yaml",
        "file": "sam2.1_hiera_small.pt",
        "hf_repo": "facebook/sam2.1-hiera-small",
    },
    "sam2.1_hiera_b+": {
        "config": "configs/sam2.1/sam2.1_hiera_b+.yaml",
        "file": "sam2.1_hiera_base_plus.pt",
        "hf_repo": "facebook/sam2.1-hiera-base-plus",
    },
    "sam2.1_hiera_l": {
        "config": "configs/sam2.1/sam2.1_hiera_l.yaml",
        "file": "sam2.1_hiera_large.pt",
        "hf_repo": "facebook/sam2.1-hiera-large",
    },
}
SAM2_ALIASES = {
    "sam2.1_hiera_tiny": "sam2.1_hiera_t",
    "sam2.1_hiera_small": "sam2.1_hiera_s",
    "sam2.1_hiera_base_plus": "sam2.1_hiera_b+",
    "sam2.1_hiera_large": "sam2.1_hiera_l",
}

#: What ``build_sam2(..., apply_postprocessing=True)`` (its default) adds to every config.
POSTPROCESSING_OVERRIDES: dict[str, Any] = {
    "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
}


def release_url(model_type: str) -> str:
    return f"{_RELEASE_URL}/{SAM2_MODELS[model_type]['file']}"


def _require_sam2() -> None:
    try:
        import sam2  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "SAM 2 needs the sam2 package: `pip install ovseg[sam2]` (off-GPU: "
            "`SAM2_BUILD_CUDA=0 pip install sam2`)."
        ) from exc


def resolve_sam2_name(model_type: str | os.PathLike) -> str:
    """The release name of ``model_type`` (aliases resolved), or its path for a YAML file."""
    name = os.fspath(model_type)
    name = SAM2_ALIASES.get(name, name)
    if name in SAM2_MODELS:
        return name
    if name.endswith((".yaml", ".yml")):
        return name
    raise ConfigError(
        f"Unknown SAM 2 model_type {name!r}. Use one of {', '.join(SAM2_MODELS)} "
        f"(or {', '.join(SAM2_ALIASES)}), or a .yaml model config in sam2's layout."
    )


def _check_targets(node: Any, where: str) -> None:
    """Only classes of the sam2 package may be instantiated from a config."""
    from omegaconf import DictConfig, ListConfig

    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if target is not None and not str(target).startswith("sam2."):
            raise ConfigError(
                f"SAM 2 config {where} names _target_ {target!r}; only classes of the sam2 "
                "package (sam2.*) may be built from a model config."
            )
        for value in node.values():
            _check_targets(value, where)
    elif isinstance(node, ListConfig):
        for value in node:
            _check_targets(value, where)


def sam2_config(model_type: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> Any:
    """The resolved OmegaConf config of ``model_type`` with the post-processing and ``overrides``.

    ``overrides`` maps dotted keys to values (a leading ``+``/``++`` as in hydra is allowed).
    """
    _require_sam2()
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    name = resolve_sam2_name(model_type)
    if name in SAM2_MODELS:
        path = Path(str(resources.files("sam2") / SAM2_MODELS[name]["config"]))
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"SAM 2 config file {path} does not exist.")
    try:
        cfg = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"SAM 2 config {path} is not readable YAML: {exc}.") from exc
    if "model" not in cfg:
        raise ConfigError(f"SAM 2 config {path} has no 'model' node (sam2's config layout).")
    for key, value in {**POSTPROCESSING_OVERRIDES, **dict(overrides or {})}.items():
        OmegaConf.update(cfg, str(key).lstrip("+"), value, force_add=True)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"SAM 2 config {path} does not resolve: {exc}.") from exc
    _check_targets(cfg.model, str(path))
    return cfg


def create_sam2(cfg: Any) -> torch.nn.Module:
    """A randomly initialised ``SAM2Base`` of a resolved config, in eval mode, on the CPU."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        model = instantiate(cfg.model, _recursive_=True)
    except InstantiationException as exc:
        raise ConfigError(f"SAM 2 config cannot build a model: {exc}.") from exc
    return model.eval()


def missing_sam2_checkpoint(model_type: str, looked_at: str | os.PathLike) -> WeightsNotFoundError:
    """The error for an absent SAM 2.1 checkpoint: the file, where it is published, the key."""
    entry = SAM2_MODELS.get(model_type)
    if entry is None:
        wanted = (
            "Custom SAM 2 configs have no released weights; pass the file saved from the "
            "model's state_dict as checkpoint=PATH."
        )
    else:
        wanted = (
            f"For {model_type} the file is {entry['file']}, published on the SAM 2 release page "
            f"({release_url(model_type)}) and in the Hugging Face repo {entry['hf_repo']}; "
            "download it and pass its path as `checkpoint: PATH` in the decoder config "
            "(checkpoint=PATH in Python)."
        )
    return WeightsNotFoundError(f"SAM 2 checkpoint '{looked_at}' does not exist. {wanted}")


def resolve_sam2_checkpoint(model_type: str, checkpoint: str | os.PathLike | None) -> Path:
    """``checkpoint`` when it exists; else the released file in torch hub's checkpoint folder
    (downloaded there first when the network is allowed)."""
    released = SAM2_MODELS.get(model_type)
    return resolve_checkpoint_file(
        checkpoint,
        released["file"] if released else None,
        release_url(model_type) if released else None,
        lambda path: missing_sam2_checkpoint(model_type, path),
    )


def build_sam2_model(
    model_type: str | os.PathLike = "sam2.1_hiera_t",
    checkpoint: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    random_init: bool = False,
) -> torch.nn.Module:
    """A ``SAM2Base`` in eval mode on ``device`` (default CPU).

    Args:
        model_type: ``sam2.1_hiera_t`` / ``_s`` / ``_b+`` / ``_l`` (or ``..._tiny``, ``_small``,
            ``_base_plus``, ``_large``) or a ``.yaml`` config in sam2's layout.
        checkpoint: the weights (official ``.pt`` or ``.safetensors``); default: the released
            file of ``model_type``.
        overrides: dotted config keys to change (a tiny architecture for tests, ...).
        random_init: keep sam2's random initialisation and load nothing.

    Raises:
        ConfigError: unknown model type or a config that cannot build a model.
        WeightsNotFoundError: no checkpoint (the message names the file and where it is).
        UnsafeCheckpointError / CheckpointError: a refused, damaged or non-matching file.
    """
    name = resolve_sam2_name(model_type)
    path = None if random_init else resolve_sam2_checkpoint(name, checkpoint)
    model = create_sam2(sam2_config(name, overrides))
    if path is not None:
        load_sam_weights(model, path)
    target = torch.device(device) if device is not None else torch.device("cpu")
    return model.to(target).eval()
