"""Dense features from an open_clip ``ModifiedResNet``: its attention pool at every position.

CLIP's ResNets end in an attention pool whose single query is the mean of the final feature
map. Running the same pool with *every* position as a query (DenseCLIP's formulation) gives a
per-position embedding in the joint space; the first output (the mean query) is the usual global
image embedding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.models.backbones.dense_vit import interpolate_pos_embed


def resnet_dense_tokens(
    visual: nn.Module, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(global (B, D), dense (B, D, h, w))`` with ``h, w = H // 32, W // 32``."""
    x = visual.stem(images)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    return attention_pool_everywhere(visual.attnpool, x)


def attention_pool_everywhere(
    pool: nn.Module,
    x: torch.Tensor,
    resize_positions: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] = (
        interpolate_pos_embed
    ),
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's attention pool with the mean token and every position as queries.

    Args:
        pool: an open_clip ``AttentionPool2d``.
        x: ``(B, C, h, w)`` last-stage features.
        resize_positions: maps the pool's ``(1 + g*g, C)`` positional embedding to ``(h, w)``.
        training: passed to the attention (dropout is 0 either way).

    Returns:
        ``(global (B, D), dense (B, D, h, w))``.
    """
    batch, channels, h, w = x.shape
    tokens = x.reshape(batch, channels, h * w).permute(2, 0, 1)  # (hw, B, C)
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
    pos = resize_positions(pool.positional_embedding, (h, w))
    tokens = tokens + pos[:, None, :].to(tokens.dtype)
    out, _ = F.multi_head_attention_forward(
        query=tokens,
        key=tokens,
        value=tokens,
        embed_dim_to_check=channels,
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        training=training,
        need_weights=False,
    )
    out = out.permute(1, 2, 0)  # (B, D, 1 + hw)
    return out[:, :, 0], out[:, :, 1:].reshape(batch, -1, h, w)
