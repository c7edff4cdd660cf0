"""Released READ / LISA checkpoints (HF folders) -> :class:`~ovseg.models.multimodal.read.ReadModel`.

A folder holds ``config.json`` (LLaVA's LLaMA config plus ``mm_*`` fields and ``out_dim``), the
tokenizer (with ``[SEG]``, ``<im_start>``, ``<im_end>`` added) and the weights, in one of:
``model.safetensors``, ``model.safetensors.index.json`` + shards, ``pytorch_model.bin``, or
``pytorch_model.bin.index.json`` + shards (the index's ``weight_map`` names each key's shard).
Every file goes through :func:`ovseg.weights.load_state_dict` (safetensors, or a scanned
``torch.load(weights_only=True)``); no remote code runs.

Key layout (READ's ``READForCausalLM``) and where each part goes here:

==========================================  ==============================================
``lm_head.*``                               ``mllm.language_model.lm_head.*``
``model.embed_tokens.*``, ``model.layers.*``,  ``mllm.language_model.model.*``
``model.norm.*``
``model.mm_projector.*``                    ``mllm.mm_projector.*``
``model.vision_tower.*``                    ``mllm.vision_tower.*`` (HF CLIP:
                                            ``model.vision_tower.vision_tower.vision_model.*``)
``model.visual_model.*`` (segment-anything)  ``visual_model.*``
``model.text_hidden_fcs.*``                 ``text_hidden_fcs.*``
==========================================  ==============================================

Loading is strict: a key that maps nowhere, a key of the model that no file fills, or a shape
that differs raises :class:`~ovseg.errors.CheckpointError` listing them. The one exception is
``*.rotary_emb.inv_freq`` (older transformers saved this derived buffer; it is recomputed).

The vision tower: READ's release script drops ``vision_tower`` weights (they are the unchanged
CLIP), so unless the folder has ``model.vision_tower.*`` keys the tower comes from
``vision_tower=``: a local HF CLIP folder (its config also shapes the tower when the weights are
in the READ folder, unless ``config.json`` has a ``vision_config`` mapping) (``openai/clip-vit-large-patch14-336`` for the
LLaVA-1.5 based models; its ``vision_model.*`` weights are loaded strictly, a full CLIP
checkpoint's text tower is not used, as ``CLIPVisionModel.from_pretrained`` does), an open_clip
spec ``"open_clip:MODEL@TAG"`` (e.g. ``open_clip:ovseg-ViT-Ti-8@shapes``), or a built module.
``mm_vision_tiles`` (an ovseg field, default 1: READ's single crop) encodes the image as that
many crops per side (:mod:`.vision`).

SAM's architecture is found from the number of image-encoder blocks (12 / 24 / 32: ViT-B / L /
H; READ uses ViT-H), or given (``sam_architecture=``, or ``ovseg_sam_architecture`` in
``config.json``, a name or a mapping of :class:`~ovseg.models.decoders.sam_build.SamArchitecture`
fields).

``ovseg_sasp_selector`` (an ovseg field; absent in READ's releases) is the config of the SasP
selector the model was trained with (e.g. ``{type: SasPSelector, compat: read, down_sample: 1,
t_pos: 0.95}``); the loaded model uses it unless ``selector=`` is given. Without it the model
uses READ's selector (``SasPSelector(compat="read")``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovseg.errors import (
    CheckpointError,
    ConfigError,
    MissingDependencyError,
    UnknownComponentError,
    WeightsNotFoundError,
)
from ovseg.models.multimodal.constants import (
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    SEG_TOKEN,
)
from ovseg.weights import load_state_dict

__all__ = [
    "KEY_PREFIXES",
    "build_language_model",
    "build_read_model",
    "build_vision_tower",
    "find_weight_files",
    "load_folder_state",
    "load_read_model",
    "load_tokenizer",
    "map_read_keys",
    "read_layout_state_dict",
    "save_read_folder",
]

# checkpoint prefix -> ReadModel prefix; the first match wins, so "model." comes last
KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("lm_head.", "mllm.language_model.lm_head."),
    ("model.mm_projector.", "mllm.mm_projector."),
    ("model.vision_tower.", "mllm.vision_tower."),
    ("model.visual_model.", "visual_model."),
    ("model.text_hidden_fcs.", "text_hidden_fcs."),
    ("model.", "mllm.language_model.model."),
)
DERIVED_KEY = re.compile(r".*rotary_emb\.inv_freq$")
WEIGHT_LAYOUTS = (
    ("model.safetensors.index.json", True),
    ("model.safetensors", False),
    ("pytorch_model.bin.index.json", True),
    ("pytorch_model.bin", False),
)
SAM_DEPTHS = {12: "vit_b", 24: "vit_l", 32: "vit_h"}
CONFIG_DROP = ("model_type", "architectures", "torch_dtype", "dtype", "transformers_version")


def find_weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files of an HF folder, in the first layout found (module docstring)."""
    folder = Path(folder)
    for name, is_index in WEIGHT_LAYOUTS:
        path = folder / name
        if not path.is_file():
            continue
        if not is_index:
            return [path]
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path} is not a weight index (no 'weight_map').") from err
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise WeightsNotFoundError(
                f"{path} names shards that are not in {folder}: {missing[:4]}; download the "
                "whole folder."
            )
        return [folder / s for s in shards]
    raise WeightsNotFoundError(
        f"No weights in {folder}: expected one of {', '.join(name for name, _ in WEIGHT_LAYOUTS)}."
    )


def load_folder_state(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of an HF folder's weight files (shards merged; a key twice is an error)."""
    files = find_weight_files(folder)
    index: dict[str, str] = {}
    for name, is_index in WEIGHT_LAYOUTS:
        if (Path(folder) / name).is_file():
            if is_index:
                index = json.loads((Path(folder) / name).read_text())["weight_map"]
            break
    state: dict[str, torch.Tensor] = {}
    for path in files:
        part = load_state_dict(path)
        twice = sorted(set(part) & set(state))
        if twice:
            raise CheckpointError(f"Keys stored in more than one shard: {twice[:6]}.")
        if index:
            wrong = sorted(k for k in part if index.get(k) != path.name)
            if wrong:
                raise CheckpointError(
                    f"{path.name} holds keys its index does not place there: {wrong[:6]}."
                )
        state.update(part)
    if index:
        absent = sorted(set(index) - set(state))
        if absent:
            raise CheckpointError(f"The index lists keys no shard holds: {absent[:6]}.")
    return state


def map_read_keys(
    state: Mapping[str, torch.Tensor], model: nn.Module | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """READ's keys -> ReadModel keys; returns ``(mapped, unknown keys)`` (derived keys dropped).

    With ``model``, HF CLIP tower keys are also fitted to its transformers version
    (``vision_model.`` level, see :func:`_clip_prefix`).
    """
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if DERIVED_KEY.match(key):
            continue
        for source, target in KEY_PREFIXES:
            if key.startswith(source):
                mapped[target + key[len(source) :]] = value
                break
        else:
            unknown.append(key)
    if model is not None:
        mapped = _to_model_tower_keys(mapped, _clip_prefix(model))
    return mapped, unknown


HF_TOWER = "mllm.vision_tower.vision_tower."


def _clip_prefix(model: nn.Module) -> str:
    """``"vision_model."`` when the model's HF CLIP tower lacks that level (transformers 5's
    ``CLIPVisionModel`` keeps ``embeddings.*`` at the top, LLaVA's checkpoints
    ``vision_model.embeddings.*``), else ``""``."""
    from ovseg.models.multimodal.vision import HFClipVisionTower

    tower = model.mllm.vision_tower
    if not isinstance(tower, HFClipVisionTower):
        return ""
    keys = tower.vision_tower.state_dict()
    return "" if any(k.startswith("vision_model.") for k in keys) else "vision_model."


def _to_model_tower_keys(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if not prefix:
        return state
    strip = HF_TOWER + prefix
    return {(HF_TOWER + k[len(strip) :] if k.startswith(strip) else k): v for k, v in state.items()}


def read_layout_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The inverse of :func:`map_read_keys`: a ReadModel's tensors under READ's key names."""
    out: dict[str, torch.Tensor] = {}
    prefix = _clip_prefix(model)
    state = model.state_dict()
    adapters = [k for k in state if ".lora_" in k or ".base_layer." in k]
    if adapters:
        raise CheckpointError(
            f"The model holds LoRA adapters ({adapters[0]} ...); merge them first "
            "(ovseg.models.multimodal.lora.merge_lora), as READ's release script does."
        )
    for key, value in state.items():
        if prefix and key.startswith(HF_TOWER):
            key = HF_TOWER + prefix + key[len(HF_TOWER) :]
        for source, target in KEY_PREFIXES:
            if key.startswith(target):
                out[source + key[len(target) :]] = value
                break
        else:
            raise CheckpointError(f"{key} has no place in READ's layout.")
    return out


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise WeightsNotFoundError(f"{folder} has no config.json; it is not a READ model folder.")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype | None) -> Any:
    """Create floating-point tensors in ``dtype`` inside the block (None: unchanged)."""
    if dtype is None:
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _no_init() -> Any:
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        return contextlib.nullcontext()
    return no_init_weights()


def build_language_model(
    config: Mapping[str, Any], attn_implementation: str = "sdpa", init: bool = True
) -> nn.Module:
    """``LlamaForCausalLM`` of a READ / LLaVA ``config.json`` (random init, or none when
    ``init`` is False because weights follow)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    fields = {k: v for k, v in config.items() if k not in CONFIG_DROP and not k.startswith("_")}
    llama_config = LlamaConfig(**fields)
    llama_config._attn_implementation = attn_implementation
    with contextlib.nullcontext() if init else _no_init():
        return LlamaForCausalLM(llama_config)


def build_vision_tower(
    spec: Any, config: Mapping[str, Any], init: bool = True
) -> tuple[nn.Module, Path | None]:
    """The tower from ``spec`` (module docstring); returns it and the HF folder to load it from."""
    from ovseg.models.multimodal.vision import HFClipVisionTower, OpenClipVisionTower

    select = {
        "select_layer": int(config.get("mm_vision_select_layer", -2)),
        "select_feature": str(config.get("mm_vision_select_feature", "patch")),
        "tiles": int(config.get("mm_vision_tiles", 1)),
    }
    if isinstance(spec, nn.Module):
        return spec, None
    spec = spec if spec is not None else config.get("mm_vision_tower")
    if spec is None:
        raise ConfigError("No vision tower: give vision_tower= (a CLIP folder or open_clip spec).")
    text = str(spec)
    if text.startswith("open_clip:"):
        from ovseg.models.backbones.clip import ClipBackbone

        name, _, tag = text[len("open_clip:") :].partition("@")
        backbone = ClipBackbone(name, pretrained=tag or None)
        return OpenClipVisionTower.from_backbone(backbone, **select), None
    folder = Path(text).expanduser()
    if not (folder / "config.json").is_file() and isinstance(config.get("vision_config"), Mapping):
        from transformers import CLIPVisionConfig

        with contextlib.nullcontext() if init else _no_init():
            tower = HFClipVisionTower.from_config(
                CLIPVisionConfig(**config["vision_config"]), **select
            )
        return tower, None
    if not (folder / "config.json").is_file():
        raise WeightsNotFoundError(
            f"Vision tower '{text}' is not a local folder with config.json. READ's released "
            "folders do not hold the CLIP weights: download the vision tower the model was "
            "trained with (config.json 'mm_vision_tower', e.g. openai/clip-vit-large-patch14-336 "
            "from Hugging Face) and pass its folder as vision_tower=."
        )
    vision_config = HFClipVisionTower.config_from_folder(folder)
    with contextlib.nullcontext() if init else _no_init():
        tower = HFClipVisionTower.from_config(vision_config, **select)
    return tower, folder


def _sam_architecture(
    spec: Any, config: Mapping[str, Any], state: Mapping[str, torch.Tensor] | None
) -> Any:
    if spec is None:
        spec = config.get("ovseg_sam_architecture")
    if spec is None and state is not None:
        blocks = {
            int(m.group(1))
            for k in state
            if (m := re.match(r"model\.visual_model\.image_encoder\.blocks\.(\d+)\.", k))
        }
        depth = max(blocks) + 1 if blocks else 0
        spec = SAM_DEPTHS.get(depth)
        if spec is None:
            raise ConfigError(
                f"SAM's image encoder has {depth} blocks, not an official size; give "
                "sam_architecture= (a name or SamArchitecture fields)."
            )
    return spec if spec is not None else "vit_h"


def build_read_model(
    config: Mapping[str, Any],
    seg_token_idx: int,
    *,
    vision_tower: Any = None,
    sam_architecture: Any = None,
    sam_checkpoint: str | os.PathLike | None = None,
    eos_token_id: int | None = None,
    attn_implementation: str = "sdpa",
    init: bool = True,
    dtype: torch.dtype | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """A :class:`ReadModel` of ``config`` (a READ ``config.json`` as a dict), randomly initialised
    (``init=False``: allocated only, for loading); ``sam_checkpoint`` fills SAM from a SAM
    state dict (e.g. READ's starting point ``sam_vit_h_4b8939.pth``, or a packaged small SAM),
    strictly. ``dtype``: the parameters are created in it (a 7B model in bf16 never exists in
    float32). ``model_kwargs`` go to ``ReadModel``."""
    from ovseg.models.decoders.sam_build import (
        create_sam,
        load_sam_weights,
        resolve_sam_architecture,
    )
    from ovseg.models.multimodal.llava import MultimodalLM
    from ovseg.models.multimodal.read import ReadModel

    with _default_dtype(dtype):
        tower, _ = build_vision_tower(vision_tower, config, init=init)
    expected = config.get("mm_hidden_size")
    if expected is not None and int(expected) != int(tower.hidden_size):
        raise ConfigError(
            f"The vision tower gives {tower.hidden_size}-d features but config.json says "
            f"mm_hidden_size={expected}; use the tower the model was trained with."
        )
    with _default_dtype(dtype):
        language_model = build_language_model(config, attn_implementation, init=init)
    with _default_dtype(dtype):
        mllm = MultimodalLM(tower, language_model, str(config.get("mm_projector_type", "linear")))
    _, arch = resolve_sam_architecture(_sam_architecture(sam_architecture, config, None))
    with _default_dtype(dtype):
        sam = create_sam(arch)
    # kept float32 in any precision (see ReadModel._apply): exact normalisation constants, and
    # the point-encoding frequencies segment-anything multiplies float32 coordinates with
    sam.pixel_mean = torch.tensor(arch.pixel_mean, dtype=torch.float32).view(-1, 1, 1)
    sam.pixel_std = torch.tensor(arch.pixel_std, dtype=torch.float32).view(-1, 1, 1)
    sam.prompt_encoder.pe_layer.float()
    if sam_checkpoint is not None:
        load_sam_weights(sam, sam_checkpoint)
    with _default_dtype(dtype):  # READ's text_hidden_fcs too
        return ReadModel(
            mllm,
            sam,
            seg_token_idx,
            out_dim=int(config.get("out_dim", 256)),
            eos_token_id=eos_token_id,
            **{"use_im_start_end": bool(config.get("mm_use_im_start_end", True)), **model_kwargs},
        )


def _token_id(tokenizer: Any, token: str, folder: Path) -> int:
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == getattr(tokenizer, "unk_token_id", None):
        raise CheckpointError(
            f"The tokenizer in {folder} has no single token {token!r}; READ's tokenizer adds "
            f"{SEG_TOKEN}, {DEFAULT_IM_START_TOKEN} and {DEFAULT_IM_END_TOKEN}."
        )
    return int(ids[0])


def load_tokenizer(folder: str | os.PathLike) -> Any:
    """The folder's tokenizer (local files only, no remote code), pad = unk as READ sets it."""
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise MissingDependencyError(
            "READ models need transformers: pip install 'ovseg[read]'."
        ) from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
    except (ValueError, OSError, ImportError) as err:
        raise CheckpointError(
            f"No usable tokenizer in {folder}: {err} READ folders ship LLaMA's tokenizer.model "
            "(converting it needs sentencepiece and protobuf: pip install 'ovseg[read]') or a "
            "tokenizer.json."
        ) from err
    if tokenizer.pad_token is None and tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def _check_and_load(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{where} does not fit the model: {len(missing)} missing keys {missing[:8]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:8]}."
        )
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise CheckpointError(f"{where} does not fit the model: shapes differ for {wrong[:6]}.")
    model.load_state_dict(state, strict=True)


def load_read_model(
    folder: str | os.PathLike,
    *,
    vision_tower: Any = None,
    sam_architecture: Any = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    attn_implementation: str = "sdpa",
    missing_hint: str = "",
    **model_kwargs: Any,
) -> tuple[nn.Module, Any]:
    """A released READ folder -> ``(ReadModel in eval mode, tokenizer)``, strictly.

    Args:
        folder: the HF folder (module docstring).
        vision_tower: where the tower's weights come from when the folder has none.
        sam_architecture: SAM's architecture (default: found from the weights).
        device, dtype: where and in what float type the model lives (dtype None: float32).
        missing_hint: added to the error when ``folder`` does not exist (what to download).
        model_kwargs: :class:`ReadModel` options (``selector``: default the folder's
            ``ovseg_sasp_selector``, else READ's; loss weights ...).

    Raises:
        WeightsNotFoundError: no folder, config, weights or vision tower.
        CheckpointError: keys or shapes that do not fit (listed), a damaged or unsafe file.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise WeightsNotFoundError(
            f"READ model folder '{folder}' does not exist. {missing_hint}".strip()
        )
    config = _read_config(folder)
    find_weight_files(folder)  # a missing download is reported before the tokenizer
    tokenizer = load_tokenizer(folder)
    seg_token_idx = _token_id(tokenizer, SEG_TOKEN, folder)
    if config.get("mm_use_im_start_end", True):
        _token_id(tokenizer, DEFAULT_IM_START_TOKEN, folder)
        _token_id(tokenizer, DEFAULT_IM_END_TOKEN, folder)
    raw = load_folder_state(folder)
    sam_spec = _sam_architecture(sam_architecture, config, raw)
    state, unknown = map_read_keys(raw)
    if unknown:
        raise CheckpointError(
            f"{folder}: {len(unknown)} keys belong to no part of READ: {sorted(unknown)[:8]}."
        )
    has_tower = any(k.startswith("mllm.vision_tower.") for k in state)
    if model_kwargs.get("selector") is None and config.get("ovseg_sasp_selector") is not None:
        model_kwargs["selector"] = _folder_selector(config["ovseg_sasp_selector"], folder)
    model = build_read_model(
        config,
        seg_token_idx,
        vision_tower=vision_tower,
        sam_architecture=sam_spec,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation=attn_implementation,
        init=False,
        dtype=dtype,
        **model_kwargs,
    )
    state, _ = map_read_keys(raw, model)
    if not has_tower:
        state.update(_tower_state(model, vision_tower, config))
    _check_and_load(model, state, str(folder))
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def _folder_selector(spec: Any, folder: Path) -> Any:
    """The point selector a folder's ``ovseg_sasp_selector`` describes."""
    from ovseg.registry import POINT_SELECTORS

    try:
        return POINT_SELECTORS.build(spec)
    except (ConfigError, UnknownComponentError) as error:
        raise CheckpointError(
            f"{folder}/config.json: ovseg_sasp_selector {spec!r} does not build a point "
            f"selector: {error}"
        ) from error


def _tower_state(model: nn.Module, vision_tower: Any, config: Mapping[str, Any]) -> dict:
    """The tower's tensors under ReadModel keys when the READ folder has none."""
    tower = model.mllm.vision_tower
    spec = vision_tower if vision_tower is not None else config.get("mm_vision_tower")
    if isinstance(spec, nn.Module) or str(spec).startswith("open_clip:"):
        # already built with its weights: keep them
        return {f"mllm.vision_tower.{k}": v for k, v in tower.state_dict().items()}
    folder = Path(str(spec)).expanduser()
    raw = load_folder_state(folder)
    state = {
        f"{HF_TOWER}{k}": v
        for k, v in raw.items()
        if k.startswith("vision_model.") and not DERIVED_KEY.match(k)
    }
    state = _to_model_tower_keys(state, _clip_prefix(model))
    expected = {f"mllm.vision_tower.{k}" for k in tower.state_dict()}
    missing = sorted(expected - set(state))
    if missing:
        raise CheckpointError(
            f"Vision tower folder {folder} lacks {len(missing)} of the tower's weights: "
            f"{missing[:8]}."
        )
    return state


def save_read_folder(
    folder: str | os.PathLike,
    model: nn.Module,
    tokenizer: Any,
    config: Mapping[str, Any],
    *,
    include_vision_tower: bool = False,
) -> Path:
    """Write ``model`` as a READ folder :func:`load_read_model` reads back: ``config.json``, the
    tokenizer and ``model.safetensors`` in READ's key layout (each file written atomically).

    Like READ's release script, the vision tower is left out unless ``include_vision_tower``
    (``config["mm_vision_tower"]`` then says where it comes from). Merge LoRA adapters first
    (:func:`ovseg.models.multimodal.lora.merge_lora`): adapter weights have no place in the
    layout.
    """
    from ovseg.fileio import atomic_write_json
    from ovseg.weights import save_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: v
        for k, v in read_layout_state_dict(model).items()
        if include_vision_tower or not k.startswith("model.vision_tower.")
    }
    atomic_write_json(folder / "config.json", dict(config), indent=2)
    tokenizer.save_pretrained(str(folder))
    save_state_dict(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder
