"""Vision towers for LLaVA-style models: preprocessed images -> patch features.

Interface (:class:`VisionTower`): ``tower(images)`` with ``images`` ``(B, 3, S, S)`` already
normalised (``S = tower.image_size``, the tower's ``mean``/``std`` in [0, 1] units) returns
``(B, h * w, C)`` patch features in row-major order, ``(h, w) = tower.grid_size``,
``C = tower.hidden_size``.

LLaVA's choice (``mm_vision_select_layer = -2``, ``mm_vision_select_feature = "patch"``): the
hidden states after the second-to-last transformer block (before the last block; no final
layer norm, no projection), without the class token. Two implementations:

* :class:`HFClipVisionTower`: transformers' ``CLIPVisionModel`` (LLaVA / READ's
  ``openai/clip-vit-large-patch14-336``); ``hidden_states[select_layer]`` of its output.
* :class:`OpenClipVisionTower`: an open_clip ``VisionTransformer`` (e.g. ovseg's embedded
  ``ovseg-ViT-Ti-8``), the same layer selection over its residual blocks.

Both are frozen (no gradients), as LLaVA's tower.

Tiles (``tiles = t > 1``, config ``mm_vision_tiles``; an ovseg option, LLaVA-1.5 and READ use
one crop): the tower's input is ``t`` times the CLIP's own size, cut into ``t x t`` crops of
that size, each encoded on its own (the CLIP sees the image at ``t`` times the resolution it
would otherwise, at the scale it was trained on), and their patch features are put back
together as one ``(t h, t w)`` grid in row-major order over the whole image. With
``cls_patch`` the class tokens of the crops come first, in crop order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ovseg.errors import ConfigError

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "HFClipVisionTower",
    "OpenClipVisionTower",
    "VisionTower",
    "selected_block_count",
    "tiled_features",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SELECT_FEATURES = ("patch", "cls_patch")


@runtime_checkable
class VisionTower(Protocol):
    """What the multimodal model needs from a vision tower (see the module docstring)."""

    image_size: int
    hidden_size: int
    grid_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def selected_block_count(num_blocks: int, select_layer: int) -> int:
    """Blocks to run so the output is HF's ``hidden_states[select_layer]``.

    ``hidden_states`` has ``num_blocks + 1`` entries (the embeddings, then each block's output),
    so ``-2`` means ``num_blocks - 1`` blocks.
    """
    index = select_layer if select_layer >= 0 else num_blocks + 1 + select_layer
    if not 0 <= index <= num_blocks:
        raise ConfigError(
            f"mm_vision_select_layer {select_layer} is outside a {num_blocks}-block tower."
        )
    return index


def _check_feature(select_feature: str) -> str:
    if select_feature not in SELECT_FEATURES:
        raise ConfigError(
            f"mm_vision_select_feature must be one of {SELECT_FEATURES}, not {select_feature!r}."
        )
    return select_feature


def _check_tiles(tiles: int) -> int:
    if int(tiles) != tiles or int(tiles) < 1:
        raise ConfigError(f"mm_vision_tiles must be a whole number >= 1, got {tiles!r}.")
    return int(tiles)


def tiled_features(
    encode: Any, images: torch.Tensor, tiles: int, grid: tuple[int, int], with_cls: bool
) -> torch.Tensor:
    """Encode ``(B, 3, t S, t S)`` as ``t x t`` crops of ``S`` and stitch their features.

    ``encode`` maps ``(N, 3, S, S)`` to ``(N, 1 + h * w, C)`` (class token first); ``grid`` is
    one crop's ``(h, w)``. Returns ``(B, t h * t w, C)`` in row-major order over the whole
    image, preceded by the ``t * t`` class tokens when ``with_cls``.
    """
    if tiles == 1:
        out = encode(images)
        return out if with_cls else out[:, 1:]
    batch, channels, height, width = images.shape
    size_h, size_w = height // tiles, width // tiles
    crops = images.reshape(batch, channels, tiles, size_h, tiles, size_w)
    crops = crops.permute(0, 2, 4, 1, 3, 5).reshape(batch * tiles * tiles, channels, size_h, size_w)
    out = encode(crops)
    dim = out.shape[-1]
    h, w = grid
    cls = out[:, 0].reshape(batch, tiles * tiles, dim)
    patches = out[:, 1:].reshape(batch, tiles, tiles, h, w, dim)
    patches = patches.permute(0, 1, 3, 2, 4, 5).reshape(batch, tiles * h * tiles * w, dim)
    return torch.cat([cls, patches], dim=1) if with_cls else patches


class _TiledTower(nn.Module):
    """What both towers share: the tiled geometry and ``forward`` over their ``_encode``."""

    select_feature: str

    def _set_geometry(self, crop_size: int, patch_size: int, tiles: int) -> None:
        self.tiles = _check_tiles(tiles)
        self.crop_size = int(crop_size)
        self.image_size = self.crop_size * self.tiles
        side = self.crop_size // int(patch_size)
        self.crop_grid = (side, side)
        self.grid_size = (side * self.tiles, side * self.tiles)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` -> ``(N, 1 + h * w, C)`` hidden states of the selected layer."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised -> ``(B, h * w, C)`` (``+ tiles**2`` with ``cls_patch``)."""
        with torch.no_grad():
            features = tiled_features(
                self._encode,
                images,
                self.tiles,
                self.crop_grid,
                self.select_feature == "cls_patch",
            )
        return features.to(images.dtype)


class HFClipVisionTower(_TiledTower):
    """transformers' ``CLIPVisionModel`` as LLaVA uses it.

    Args:
        model: a ``CLIPVisionModel``, kept as ``self.vision_tower`` (LLaVA's attribute, so its
            weights are ``vision_tower.vision_model.*`` as in LLaVA checkpoints).
        select_layer: LLaVA's ``mm_vision_select_layer`` (-2).
        select_feature: ``"patch"`` (drop the class token) or ``"cls_patch"``.
        mean, std: the image normalisation (OpenAI CLIP's by default).
        tiles: crops per side (module docstring; 1: LLaVA's single crop).
    """

    def __init__(
        self,
        model: nn.Module,
        select_layer: int = -2,
        select_feature: str = "patch",
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        tiles: int = 1,
    ) -> None:
        super().__init__()
        self.vision_tower = model.eval().requires_grad_(False)
        config = model.config
        self.select_layer = int(select_layer)
        selected_block_count(int(config.num_hidden_layers), self.select_layer)
        self.select_feature = _check_feature(select_feature)
        self._set_geometry(int(config.image_size), int(config.patch_size), tiles)
        self.hidden_size = int(config.hidden_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> HFClipVisionTower:
        """A randomly initialised tower of a ``CLIPVisionConfig`` (weights loaded afterwards)."""
        from transformers import CLIPVisionModel

        return cls(CLIPVisionModel(config), **kwargs)

    @classmethod
    def config_from_folder(cls, folder: str | os.PathLike) -> Any:
        """``CLIPVisionConfig`` of a local HF folder (a CLIP or CLIP-vision ``config.json``)."""
        from transformers import CLIPVisionConfig

        return CLIPVisionConfig.from_pretrained(str(folder), local_files_only=True)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        param = next(self.vision_tower.parameters())
        out = self.vision_tower(
            pixel_values=images.to(device=param.device, dtype=param.dtype),
            output_hidden_states=True,
        )
        return out.hidden_states[self.select_layer]


class OpenClipVisionTower(_TiledTower):
    """An open_clip ``VisionTransformer`` with LLaVA's layer and token selection.

    Args:
        visual: ``open_clip`` model's ``.visual`` (a ``VisionTransformer`` with a class token).
        mean, std: the model's image normalisation.
        select_layer, select_feature, tiles: as :class:`HFClipVisionTower`.
    """

    def __init__(
        self,
        visual: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        select_layer: int = -2,
        select_feature: str = "patch",
        tiles: int = 1,
    ) -> None:
        super().__init__()
        if not hasattr(visual, "transformer") or not hasattr(visual, "class_embedding"):
            raise ConfigError(
                f"{type(visual).__name__} is not an open_clip VisionTransformer with a class "
                "token; LLaVA's tower needs one."
            )
        self.visual = visual.eval().requires_grad_(False)
        self.select_layer = int(select_layer)
        self.num_blocks = selected_block_count(len(visual.transformer.resblocks), select_layer)
        self.select_feature = _check_feature(select_feature)
        size = visual.image_size
        patch = visual.patch_size
        self._set_geometry(
            int(size[0] if isinstance(size, tuple) else size),
            int(patch[0] if isinstance(patch, tuple) else patch),
            tiles,
        )
        self.hidden_size = int(visual.class_embedding.shape[-1])
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    @classmethod
    def from_backbone(cls, backbone: Any, **kwargs: Any) -> OpenClipVisionTower:
        """From an ovseg :class:`~ovseg.models.backbones.clip.ClipBackbone` (its image tower)."""
        mean = tuple(backbone.mean.flatten().tolist())
        std = tuple(backbone.std.flatten().tolist())
        return cls(backbone.model.visual, mean, std, **kwargs)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        param = visual.class_embedding
        x = visual._embeds(images.to(device=param.device, dtype=param.dtype))
        batch_first = getattr(visual.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for block in visual.transformer.resblocks[: self.num_blocks]:
            x = block(x)
        if not batch_first:
            x = x.transpose(0, 1)
        return x
