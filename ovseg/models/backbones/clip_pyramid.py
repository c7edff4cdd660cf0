"""Multi-level features from a CLIP image tower (ResNet or ViT), as DenseCLIP uses them.

:class:`ClipPyramid` wraps an open_clip image tower and returns, for normalised images
``(B, 3, H, W)`` (RGB, the model's mean/std):

* ``features``: four maps at strides 4, 8, 16, 32, ``(B, C_i, H / s_i, W / s_i)``;
* ``global_embed``: ``(B, D)`` the image embedding in CLIP's joint space;
* ``dense``: ``(B, D, h, w)`` joint-space embeddings of every position.

ResNets (open_clip ``ModifiedResNet``): the four stage outputs (``layer1`` .. ``layer4``); the
attention pool runs with every position of ``layer4`` as a query (the mean query gives the
global embedding), so ``dense`` lies on the stride-32 grid.

ViTs (open_clip ``VisionTransformer``): the token maps after blocks ``out_indices`` (DenseCLIP:
3, 5, 7, 11 of 12) are reshaped to the patch grid and brought to strides 4/8/16/32 with
transposed convolutions, identity or max pooling, each after a ``GroupNorm(1, C)``; for 16 px
patches: ``[GN, deconv, BN, GELU, deconv]``, ``[GN, deconv]``, ``[GN]``, ``[GN, maxpool 2]``;
for 8 px patches: ``[GN, deconv]``, ``[GN]``, ``[GN, maxpool 2]``, ``[GN, maxpool 4]``.
``dense`` is the output of the last block through ``ln_post`` and the projection, on the patch
grid; ``global_embed`` what the model pools (class token, or the token mean for ``avg`` models).

Positional embeddings follow the reference code: with ``input_resolution`` the stored grid is
resized once at construction (bilinear, ``align_corners=False``) to ``input_resolution /
stride`` and stays a trainable parameter; at run time it is resized bilinearly to the actual
grid when that differs. Optional stochastic depth over the ViT blocks (``drop_path_rate``,
linearly increasing per block).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.errors import ConfigError
from ovseg.models.backbones.dense_resnet import attention_pool_everywhere

STRIDES = (4, 8, 16, 32)


class PyramidOutput(NamedTuple):
    """What :class:`ClipPyramid` returns (see the module docstring for shapes)."""

    features: list[Tensor]
    global_embed: Tensor
    dense: Tensor


def drop_path(x: Tensor, prob: float, training: bool) -> Tensor:
    """Stochastic depth: zero a sample's residual branch with probability ``prob``, else scale
    it by ``1 / (1 - prob)``. ``x`` is batch-first."""
    if prob <= 0.0 or not training:
        return x
    keep = 1.0 - prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def resize_grid_embedding(embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """``(1 + S*S, C)`` positional embedding -> ``(1 + h*w, C)``, patch part resized bilinearly.

    The first row (class token / mean query) is kept; the ``S x S`` part is resized with
    ``F.interpolate(mode="bilinear", align_corners=False)`` to ``grid = (h, w)``.
    """
    num = embed.shape[0] - 1
    side = int(round(math.sqrt(num)))
    if side * side != num:
        raise ConfigError(f"Positional embedding of {num} positions is not a square grid.")
    first, rest = embed[:1], embed[1:]
    if (side, side) == tuple(grid):
        return embed
    rest = rest.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    rest = F.interpolate(rest.float(), size=grid, mode="bilinear", align_corners=False)
    rest = rest.to(embed.dtype).permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
    return torch.cat([first, rest], dim=0)


def _level_op(width: int, patch: int, stride: int) -> nn.Module:
    """GroupNorm, then the up/down sampling that brings a patch grid to ``stride``."""
    layers: list[nn.Module] = [nn.GroupNorm(1, width)]
    if stride < patch:
        factor = patch // stride
        steps = int(round(math.log2(factor)))
        if 2**steps != factor or patch % stride:
            raise ConfigError(f"Patch size {patch} cannot reach stride {stride} by 2x upsampling.")
        for step in range(steps):
            if step:
                layers += [nn.BatchNorm2d(width), nn.GELU()]
            layers.append(nn.ConvTranspose2d(width, width, kernel_size=2, stride=2))
    elif stride > patch:
        if stride % patch:
            raise ConfigError(f"Stride {stride} is not a multiple of the patch size {patch}.")
        layers.append(nn.MaxPool2d(kernel_size=stride // patch, stride=stride // patch))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def default_out_indices(num_layers: int) -> tuple[int, ...]:
    """Blocks whose outputs form the pyramid: DenseCLIP's (3, 5, 7, 11) for 12 blocks, scaled."""
    return tuple(max(0, round(k * num_layers / 12) - 1) for k in (4, 6, 8, 12))


class ClipPyramid(nn.Module):
    """Four-level features plus global and dense joint-space embeddings from a CLIP image tower.

    Args:
        visual: an open_clip ``ModifiedResNet`` or ``VisionTransformer`` (its weights are used
            and trained in place).
        input_resolution: training crop size; the positional embedding is resized once to
            ``input_resolution // stride`` (the reference does this at load time). None keeps it.
        out_indices: ViT blocks feeding the four levels (default :func:`default_out_indices`).
        drop_path_rate: ViT stochastic depth of the last block (0 at the first).
        cls_pos_includes_class_embedding: ViT only; add the class embedding to the class
            token's positional embedding as well, as DenseCLIP's ViT code does (so the class
            token carries it twice). Off by default: it departs from CLIP's own forward.
    """

    def __init__(
        self,
        visual: nn.Module,
        *,
        input_resolution: int | None = None,
        out_indices: Sequence[int] | None = None,
        drop_path_rate: float = 0.0,
        cls_pos_includes_class_embedding: bool = False,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.is_vit = hasattr(visual, "transformer") and hasattr(visual, "conv1")
        if not self.is_vit and not hasattr(visual, "attnpool"):
            raise ConfigError(
                f"{type(visual).__name__} is neither a CLIP ViT nor a CLIP ModifiedResNet; "
                "DenseCLIP needs one of those image towers."
            )
        self.drop_path_rate = float(drop_path_rate)
        self.cls_pos_includes_class_embedding = bool(cls_pos_includes_class_embedding)
        if self.is_vit:
            self._init_vit(out_indices)
        else:
            if drop_path_rate or out_indices is not None or cls_pos_includes_class_embedding:
                raise ConfigError(
                    "out_indices, drop_path_rate and cls_pos_includes_class_embedding apply to "
                    "ViT backbones only; remove them for a ResNet."
                )
            self.out_channels = [int(layer[-1].bn3.num_features) for layer in self._layers()]
            self.patch_size = 32
            self.embed_dim = int(visual.attnpool.c_proj.out_features)
        if input_resolution is not None:
            self._resize_stored_pos_embed(int(input_resolution))

    # ------------------------------------------------------------------ construction
    def _init_vit(self, out_indices: Sequence[int] | None) -> None:
        visual = self.visual
        blocks = visual.transformer.resblocks
        for block in blocks:
            needed = ("ln_1", "ln_2", "mlp", "ls_1", "ls_2", "attention")
            if not all(hasattr(block, name) for name in needed):
                raise ConfigError(
                    f"ViT block {type(block).__name__} is not an open_clip ResidualAttentionBlock."
                )
        if getattr(visual, "attn_pool", None) is not None or visual.pool_type not in ("tok", "avg"):
            raise ConfigError(
                "DenseCLIP needs a ViT pooled by its class token or token mean (pool_type 'tok' "
                "or 'avg'), not an attentional pooler."
            )
        if getattr(visual, "final_ln_after_pool", False):
            raise ConfigError("ViTs with final_ln_after_pool are not supported for dense features.")
        patch = visual.patch_size
        self.patch_size = int(patch[0] if isinstance(patch, tuple) else patch)
        width = int(visual.conv1.out_channels)
        indices = tuple(out_indices) if out_indices is not None else None
        indices = indices or default_out_indices(len(blocks))
        if len(indices) != 4 or not all(0 <= int(i) < len(blocks) for i in indices):
            raise ConfigError(
                f"out_indices must name 4 of the {len(blocks)} blocks (0-based), got {indices}."
            )
        self.out_indices = tuple(int(i) for i in indices)
        self.levels = nn.ModuleList(_level_op(width, self.patch_size, s) for s in STRIDES)
        self.out_channels = [width] * 4
        self.embed_dim = int(visual.proj.shape[1]) if visual.proj is not None else width
        self.block_drop = [
            float(r) for r in torch.linspace(0, self.drop_path_rate, len(blocks)).tolist()
        ]

    def _layers(self) -> list[nn.Module]:
        v = self.visual
        return [v.layer1, v.layer2, v.layer3, v.layer4]

    def _pos_owner(self) -> tuple[nn.Module, str]:
        if self.is_vit:
            return self.visual, "positional_embedding"
        return self.visual.attnpool, "positional_embedding"

    def _resize_stored_pos_embed(self, resolution: int) -> None:
        side = resolution // self.patch_size
        owner, name = self._pos_owner()
        old = getattr(owner, name)
        with torch.no_grad():
            new = resize_grid_embedding(old.detach(), (side, side)).clone()
        setattr(owner, name, nn.Parameter(new, requires_grad=old.requires_grad))

    # ------------------------------------------------------------------ properties
    @property
    def strides(self) -> tuple[int, ...]:
        return STRIDES

    @property
    def dense_stride(self) -> int:
        """Pixels per dense-token cell (ViT patch size, 32 for ResNets)."""
        return self.patch_size

    @property
    def dense_level(self) -> int:
        """Index of the pyramid level on the dense-token grid (DenseCLIP concatenates there)."""
        if self.dense_stride not in STRIDES:
            raise ConfigError(
                f"The dense grid (stride {self.dense_stride}) matches no pyramid level; "
                "set score_concat_index explicitly."
            )
        return STRIDES.index(self.dense_stride)

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor) -> PyramidOutput:
        """Normalised ``(B, 3, H, W)`` -> :class:`PyramidOutput` (float, the model's dtype)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"Expected images (B, 3, H, W), got {tuple(images.shape)}.")
        if self.is_vit:
            return self._forward_vit(images)
        return self._forward_resnet(images)

    def _forward_resnet(self, images: Tensor) -> PyramidOutput:
        visual = self.visual
        x = visual.stem(images)
        features = []
        for layer in self._layers():
            x = layer(x)
            features.append(x)
        global_embed, dense = self._attention_pool_everywhere(x)
        return PyramidOutput(features, global_embed, dense)

    def _attention_pool_everywhere(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """CLIP's attention pool with the mean and every position as queries."""
        return attention_pool_everywhere(
            self.visual.attnpool, x, resize_grid_embedding, training=self.training
        )

    def _forward_vit(self, images: Tensor) -> PyramidOutput:
        visual = self.visual
        x = visual.conv1(images)
        batch, width, h, w = x.shape
        x = x.reshape(batch, width, h * w).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(batch, -1, -1)
        x = torch.cat([cls, x], dim=1)
        pos = resize_grid_embedding(visual.positional_embedding, (h, w)).to(x.dtype)
        if self.cls_pos_includes_class_embedding:
            pos = torch.cat([pos[:1] + visual.class_embedding.to(x.dtype), pos[1:]], dim=0)
        x = visual.ln_pre(x + pos)
        batch_first = getattr(visual.transformer, "batch_first", True)
        grids: dict[int, Tensor] = {}
        for index, block in enumerate(visual.transformer.resblocks):
            x = self._block(block, x, self.block_drop[index], batch_first)
            if index in self.out_indices:
                tokens = x if batch_first else x.transpose(0, 1)
                grids[index] = tokens[:, 1:].permute(0, 2, 1).reshape(batch, width, h, w)
        features = [op(grids[i].contiguous()) for op, i in zip(self.levels, self.out_indices)]
        tokens = visual.ln_post(x if batch_first else x.transpose(0, 1))
        if visual.proj is not None:
            tokens = tokens @ visual.proj
        global_embed = tokens[:, 1:].mean(dim=1) if visual.pool_type == "avg" else tokens[:, 0]
        dense = tokens[:, 1:].reshape(batch, h, w, -1).permute(0, 3, 1, 2)
        return PyramidOutput(features, global_embed, dense)

    def _block(self, block: nn.Module, x: Tensor, drop: float, batch_first: bool) -> Tensor:
        """An open_clip residual block with stochastic depth on both residual branches."""

        def branch(y: Tensor) -> Tensor:
            if drop <= 0.0 or not self.training:
                return y
            y = y if batch_first else y.transpose(0, 1)
            y = drop_path(y, drop, True)
            return y if batch_first else y.transpose(0, 1)

        x = x + branch(block.ls_1(block.attention(q_x=block.ln_1(x))))
        return x + branch(block.ls_2(block.mlp(block.ln_2(x))))
