"""SAM architectures by name or config, built uninitialised and loaded through ``ovseg.weights``.

``build_sam(model_type, checkpoint)`` returns a ``segment_anything.modeling.Sam``. The official
image encoders (``vit_b``, ``vit_l``, ``vit_h``) use the hyper-parameters of the SAM release
(1024 px input, patch 16, windowed attention of size 14 with relative positions and four global
blocks, 256-d prompts, a depth-2 two-way transformer with MLP 2048 and 8 heads). Small
architectures are registered by name (``ovseg-sam-tiny``) or passed as a mapping / JSON file of
:class:`SamArchitecture` fields.

With a checkpoint the model is created on the ``meta`` device (no random initialisation of
hundreds of millions of weights), materialised empty and filled from the state dict, which must
match the architecture exactly: :class:`~ovseg.errors.CheckpointError` names the missing and
unexpected keys (or the shape that differs).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import (
    Sam,
)
from torch import nn

from ovseg.errors import CheckpointError, ConfigError, WeightsNotFoundError
from ovseg.model_zoo.sam_release import OFFICIAL_CHECKPOINTS
from ovseg.settings import check_known_keys
from ovseg.weights import load_state_dict

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclasses.dataclass(frozen=True)
class SamArchitecture:
    """Every hyper-parameter of a SAM model (defaults: the official ViT-B release).

    ``encoder_global_attn_indexes`` lists the image-encoder blocks with global attention; the
    others attend within ``window_size`` x ``window_size`` windows (``window_size: 0`` makes
    every block global). The image embedding is ``(prompt_embed_dim, image_size / patch_size,
    image_size / patch_size)`` and the low-resolution mask logits are 4x that grid.
    """

    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    encoder_mlp_ratio: float = 4.0
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    use_rel_pos: bool = True
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (``image_size // patch_size``)."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits (``4 * embedding_size``)."""
        return 4 * self.embedding_size

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields (tuples as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any], *, what: str = "SAM config") -> SamArchitecture:
        """Fields from ``cfg`` (unknown keys are an error), the rest from the defaults; checked."""
        check_known_keys(cfg, (f.name for f in dataclasses.fields(cls)), what)
        values = dict(cfg)
        for key in ("encoder_global_attn_indexes", "pixel_mean", "pixel_std"):
            if key in values:
                values[key] = tuple(values[key])
        arch = cls(**values)
        arch.validate(what)
        return arch

    def validate(self, what: str = "SAM config") -> None:
        """Raise ConfigError when the fields cannot make a working SAM."""
        problems = []
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not a multiple of patch_size")
        if self.encoder_embed_dim % self.encoder_num_heads:
            problems.append("encoder_embed_dim is not a multiple of encoder_num_heads")
        if self.prompt_embed_dim % 8:
            problems.append("prompt_embed_dim must be a multiple of 8 (mask upscaling uses /8)")
        if self.prompt_embed_dim % self.decoder_num_heads:
            problems.append("prompt_embed_dim is not a multiple of decoder_num_heads")
        if self.mask_in_chans % 4:
            problems.append("mask_in_chans must be a multiple of 4")
        bad_blocks = [
            i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth
        ]
        if bad_blocks:
            problems.append(f"encoder_global_attn_indexes {bad_blocks} are not blocks")
        windowed = self.encoder_depth > len(set(self.encoder_global_attn_indexes))
        if windowed and self.window_size <= 0:
            problems.append("blocks outside encoder_global_attn_indexes need window_size > 0")
        if self.num_multimask_outputs < 1:
            problems.append("num_multimask_outputs must be at least 1")
        if problems:
            raise ConfigError(f"{what} cannot build a SAM: {'; '.join(problems)}.")


def _official(embed_dim: int, depth: int, heads: int, global_blocks: tuple[int, ...]):
    return SamArchitecture(
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=heads,
        encoder_global_attn_indexes=global_blocks,
    )


SAM_ARCHITECTURES: dict[str, SamArchitecture] = {
    "vit_b": _official(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": _official(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": _official(1280, 32, 16, (7, 15, 23, 31)),
    # Trains on 128 px scenes on two CPU cores (about 0.5 s for 16 images and 48 prompts): a
    # 16 x 16 grid of 8 px patches, four global-attention blocks of width 128, 64-d prompts, a
    # depth-2 two-way transformer (MLP 256, 4 heads); masks come out at 64 x 64.
    "ovseg-sam-tiny": SamArchitecture(
        encoder_embed_dim=128,
        encoder_depth=4,
        encoder_num_heads=4,
        encoder_global_attn_indexes=(0, 1, 2, 3),
        image_size=128,
        patch_size=8,
        window_size=0,
        use_rel_pos=True,
        prompt_embed_dim=64,
        mask_in_chans=16,
        decoder_depth=2,
        decoder_mlp_dim=256,
        decoder_num_heads=4,
        iou_head_depth=3,
        iou_head_hidden_dim=64,
    ),
}
SAM_ALIASES = {"default": "vit_h"}

#: The checkpoints of the official release: file name and where it is published.
SamSpec = str | os.PathLike | Mapping[str, Any] | SamArchitecture


def register_sam_architecture(name: str, config: Mapping[str, Any] | SamArchitecture) -> None:
    """Make ``name`` usable as ``model_type``; re-registering the same fields is a no-op."""
    arch = (
        config
        if isinstance(config, SamArchitecture)
        else SamArchitecture.from_mapping(config, what=f"SAM architecture {name!r}")
    )
    existing = SAM_ARCHITECTURES.get(name)
    if existing is not None and existing != arch:
        raise ConfigError(f"A different SAM architecture is already registered as {name!r}.")
    SAM_ARCHITECTURES[name] = arch


def list_sam_architectures() -> list[str]:
    return sorted(SAM_ARCHITECTURES)


def resolve_sam_architecture(model_type: SamSpec) -> tuple[str, SamArchitecture]:
    """``(name, architecture)`` of a registered name, a mapping, or a JSON file of fields.

    Unnamed configs are called ``"custom"``.
    """
    if isinstance(model_type, SamArchitecture):
        model_type.validate()
        return "custom", model_type
    if isinstance(model_type, Mapping):
        return "custom", SamArchitecture.from_mapping(model_type)
    name = os.fspath(model_type)
    name = SAM_ALIASES.get(name, name)
    if name in SAM_ARCHITECTURES:
        return name, SAM_ARCHITECTURES[name]
    if name.endswith(".json"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"SAM config file {path} does not exist.")
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"SAM config file {path} is not readable JSON: {exc}.") from exc
        if not isinstance(cfg, dict):
            raise ConfigError(f"SAM config file {path} must hold a JSON object of fields.")
        return path.stem, SamArchitecture.from_mapping(cfg, what=f"SAM config file {path}")
    raise ConfigError(
        f"Unknown SAM model_type {name!r}. Use one of {', '.join(list_sam_architectures())}, a "
        "mapping of SamArchitecture fields, or a .json file of them."
    )


def mask_decoder_arguments(arch: SamArchitecture, modeling: Any) -> dict[str, Any]:
    """The keyword arguments every SAM mask decoder of ``arch`` takes (its two-way transformer
    built from ``modeling``, segment-anything's package or HQ-SAM's)."""
    return {
        "num_multimask_outputs": arch.num_multimask_outputs,
        "transformer": modeling.TwoWayTransformer(
            depth=arch.decoder_depth,
            embedding_dim=arch.prompt_embed_dim,
            mlp_dim=arch.decoder_mlp_dim,
            num_heads=arch.decoder_num_heads,
        ),
        "transformer_dim": arch.prompt_embed_dim,
        "iou_head_depth": arch.iou_head_depth,
        "iou_head_hidden_dim": arch.iou_head_hidden_dim,
    }


def create_sam(arch: SamArchitecture, modeling: Any = None, mask_decoder: Any = None) -> Sam:
    """A randomly initialised ``Sam`` of ``arch`` in eval mode (on the current default device).

    ``modeling`` is the package whose classes build it (default ``segment_anything.modeling``;
    HQ-SAM's has the same names); ``mask_decoder``, a module or a function that builds one
    (called after the encoders), replaces the standard mask decoder.
    """
    import segment_anything.modeling as default_modeling

    modeling = default_modeling if modeling is None else modeling
    embed = arch.embedding_size
    # built in segment-anything's order (encoder, prompt encoder, mask decoder), so a seeded
    # random initialisation gives the same weights as its own builders
    image_encoder = modeling.ImageEncoderViT(
        depth=arch.encoder_depth,
        embed_dim=arch.encoder_embed_dim,
        img_size=arch.image_size,
        mlp_ratio=arch.encoder_mlp_ratio,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=arch.encoder_num_heads,
        patch_size=arch.patch_size,
        qkv_bias=True,
        use_rel_pos=arch.use_rel_pos,
        global_attn_indexes=arch.encoder_global_attn_indexes,
        window_size=arch.window_size,
        out_chans=arch.prompt_embed_dim,
    )
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=arch.prompt_embed_dim,
        image_embedding_size=(embed, embed),
        input_image_size=(arch.image_size, arch.image_size),
        mask_in_chans=arch.mask_in_chans,
    )
    if mask_decoder is None:
        mask_decoder = modeling.MaskDecoder(**mask_decoder_arguments(arch, modeling))
    elif callable(mask_decoder) and not isinstance(mask_decoder, nn.Module):
        mask_decoder = mask_decoder()
    return modeling.Sam(
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        pixel_mean=list(arch.pixel_mean),
        pixel_std=list(arch.pixel_std),
    ).eval()


def missing_official_checkpoint(
    model_type: str, looked_at: str | os.PathLike
) -> WeightsNotFoundError:
    """The error for an absent official (or unknown) SAM checkpoint, saying what to download."""
    files = "; ".join(
        f"{name}: {entry['file']} from {entry['url']}"
        for name, entry in OFFICIAL_CHECKPOINTS.items()
    )
    entry = OFFICIAL_CHECKPOINTS.get(model_type)
    wanted = f"For {model_type} the file is {entry['file']} ({entry['url']}). " if entry else ""
    return WeightsNotFoundError(
        f"SAM checkpoint '{looked_at}' does not exist. {wanted}The official SAM checkpoints are "
        f"{files} (Meta's segment-anything release); download the one you need and give its "
        "path as the decoder's checkpoint, e.g. pipelines.referring.decoder.checkpoint=/path/file "
        "pipelines.referring.decoder.pretrained=null on the ovseg predict command line."
    )


def load_sam_weights(model: Sam, checkpoint: str | os.PathLike) -> None:
    """Fill ``model`` from ``checkpoint`` (safetensors or a torch state dict), strictly."""
    state = load_state_dict(checkpoint)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"SAM checkpoint '{checkpoint}' does not fit this architecture: {len(missing)} "
            f"missing keys {missing[:6]}, {len(unexpected)} unexpected keys {unexpected[:6]}. "
            "Check that model_type matches the checkpoint."
        )
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise CheckpointError(
            f"SAM checkpoint '{checkpoint}' does not fit this architecture: shapes differ for "
            f"{'; '.join(wrong[:4])}. Check that model_type matches the checkpoint."
        )
    model.load_state_dict(state, strict=True)


def build_sam(
    model_type: SamSpec,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> Sam:
    """Build a SAM of ``model_type`` (name, mapping or JSON file) in eval mode on ``device``.

    Without ``checkpoint`` the weights are segment-anything's random initialisation. With it the
    model is built without initialising any weight and loaded from the file through
    :func:`ovseg.weights.load_state_dict` (never a bare ``torch.load``); official ``.pth``
    state dicts and ``.safetensors`` files both work, in any float dtype.

    Raises:
        ConfigError: unknown or inconsistent architecture.
        WeightsNotFoundError: ``checkpoint`` does not exist (the message names the official
            files and where they are published).
        UnsafeCheckpointError / CheckpointError: a refused, damaged or non-matching file.
    """
    name, arch = resolve_sam_architecture(model_type)
    target = torch.device(device) if device is not None else torch.device("cpu")
    if checkpoint is None:
        return create_sam(arch).to(target)
    if not Path(checkpoint).expanduser().exists():
        raise missing_official_checkpoint(name, checkpoint)
    with torch.device("meta"):
        model = create_sam(arch)
    model = model.to_empty(device="cpu")
    # the only non-persistent buffers: the normalisation constants, not in any state dict
    model.pixel_mean.copy_(torch.tensor(arch.pixel_mean).view(-1, 1, 1))
    model.pixel_std.copy_(torch.tensor(arch.pixel_std).view(-1, 1, 1))
    load_sam_weights(model, checkpoint)
    return model.to(target).eval()
