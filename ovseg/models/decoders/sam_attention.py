"""SAM's image-encoder attention as one fused ``scaled_dot_product_attention`` call.

segment-anything's ``Attention`` (ViT blocks with decomposed relative positions, MViTv2) forms
the ``(B * heads, L, L)`` score matrix, adds the relative-position terms, takes the softmax and
multiplies by the values: with ``L = 64 * 64`` tokens in the global blocks that matrix is
materialised in float32 (autocast keeps softmax in float32). Here the relative-position terms
``rel_h[..., None] + rel_w[..., None, :]`` (segment-anything's own ``get_rel_pos`` tables)
become the additive ``attn_mask`` of
:func:`torch.nn.functional.scaled_dot_product_attention`, which fuses the rest; the scale is
the same ``head_dim ** -0.5``. Same arithmetic up to summation order and where the scale is
applied, so masks match the reference closely but not bit for bit (the default ``native``
attention keeps segment-anything's own module).

:func:`with_sdpa_attention` returns an encoder that shares every parameter with the given one
and leaves that one untouched (a benchmark's reference keeps the original forward).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import get_rel_pos
from torch import nn

ATTENTION_MODES = ("native", "sdpa")


class SdpaRelPosAttention(nn.Module):
    """A segment-anything ``Attention`` (its ``qkv``, ``proj``, ``rel_pos_h/w`` shared) whose
    forward runs one fused attention call. ``x``: ``(B, H, W, C)`` -> ``(B, H, W, C)``."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = self.attention
        batch, height, width, _ = x.shape
        heads = int(attention.num_heads)
        qkv = attention.qkv(x).reshape(batch, height * width, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, L, head_dim) each
        bias = None
        if attention.use_rel_pos:
            r_q = q.reshape(batch * heads, height, width, -1)
            rel_h = torch.einsum(
                "bhwc,hkc->bhwk", r_q, get_rel_pos(height, height, attention.rel_pos_h)
            )
            rel_w = torch.einsum(
                "bhwc,wkc->bhwk", r_q, get_rel_pos(width, width, attention.rel_pos_w)
            )
            bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(
                batch, heads, height * width, height * width
            )
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attention.scale)
        out = out.view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4)
        return attention.proj(out.reshape(batch, height, width, -1))


def _is_sam_attention(module: nn.Module) -> bool:
    return all(
        hasattr(module, name) for name in ("qkv", "proj", "num_heads", "scale", "use_rel_pos")
    )


def with_sdpa_attention(encoder: nn.Module) -> nn.Module:
    """A copy of a SAM ``ImageEncoderViT`` (segment-anything, SAM-HQ) whose blocks' attention
    is :class:`SdpaRelPosAttention`; parameters and buffers are shared, ``encoder`` is unchanged.

    Raises:
        ValueError: the encoder has no ``blocks`` with segment-anything's attention.
    """
    blocks = getattr(encoder, "blocks", None)
    if blocks is None or not all(_is_sam_attention(getattr(b, "attn", None)) for b in blocks):
        raise ValueError(
            f"{type(encoder).__name__} has no segment-anything ViT blocks; attention: sdpa needs "
            "a SAM or HQ-SAM image encoder."
        )
    fast = copy.copy(encoder)
    fast._modules = dict(encoder._modules)
    new_blocks = []
    for block in blocks:
        fast_block = copy.copy(block)
        fast_block._modules = dict(block._modules)
        fast_block._modules["attn"] = SdpaRelPosAttention(block.attn)
        new_blocks.append(fast_block)
    fast._modules["blocks"] = nn.ModuleList(new_blocks)
    return fast
