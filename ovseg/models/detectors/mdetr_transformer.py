"""MDETR's transformer: RoBERTa text features resized to the model width, one encoder over the
concatenated image and text tokens, and a DETR decoder with learned queries attending to it.

Parameter names are the reference's (``transformer.encoder.layers.0.self_attn.in_proj_weight``,
``transformer.decoder.layers.0.cross_attn_image...``, ``transformer.resizer.fc``,
``transformer.text_encoder.<RobertaModel keys>``). Layers are post-norm (the released models'
``pre_norm=False``); dropout is identity at inference. Sequences are ``(L, B, C)`` as in
``nn.MultiheadAttention``'s default layout; key padding masks are ``True`` on padding.

Forward (the reference's ``encode_and_save`` then decode, in one call):

1. image tokens ``(HW, B, C)`` with their sine positions, text tokens resized by
   ``FeatureResizer`` (linear, LayerNorm eps 1e-12) with zero positions, concatenated;
2. encoder layers: ``x = norm1(x + attn(x + pos, x + pos, x))``, ``x = norm2(x + ffn(x))``;
3. decoder from zeros with the learned queries as positions: self-attention, cross-attention
   to the whole encoded memory (image and text, positions added to keys), FFN, each followed by
   its norm (``norm1``, ``norm3``, ``norm4``), then the shared final ``decoder.norm``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureResizer", "MdetrTransformer"]


class EncoderLayer(nn.Module):
    """Post-norm self-attention + ReLU FFN layer over ``(L, B, C)`` tokens."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor, padding: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        query = src + pos
        attended = self.self_attn(query, query, value=src, key_padding_mask=padding)[0]
        src = self.norm1(src + attended)
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DecoderLayer(nn.Module):
    """Post-norm self-attention, image(+text) cross-attention and FFN (``norm1/3/4``)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.cross_attn_image = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.norm4 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        padding: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        query = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(query, query, value=tgt)[0])
        attended = self.cross_attn_image(
            query=tgt + query_pos, key=memory + pos, value=memory, key_padding_mask=padding
        )[0]
        tgt = self.norm3(tgt + attended)
        return self.norm4(tgt + self.linear2(F.relu(self.linear1(tgt))))


class _Stack(nn.Module):
    def __init__(self, layer: nn.Module, count: int, norm: nn.Module | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(count))
        self.norm = norm


class FeatureResizer(nn.Module):
    """Linear map of the text features to the model width, then LayerNorm (eps 1e-12)."""

    def __init__(self, input_feat_size: int, output_feat_size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(input_feat_size, output_feat_size, bias=True)
        self.layer_norm = nn.LayerNorm(output_feat_size, eps=1e-12)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.fc(features))


class MdetrTransformer(nn.Module):
    """Text encoder + resizer + image-text encoder + decoder (see the module docstring).

    Args:
        text_config: the ``RobertaConfig`` of the text encoder (``roberta-base`` for the
            released models).
        d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward: as DETR.
    """

    def __init__(
        self,
        text_config: Any,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
    ) -> None:
        super().__init__()
        import transformers

        self.encoder = _Stack(
            EncoderLayer(d_model, nhead, dim_feedforward), num_encoder_layers, None
        )
        self.decoder = _Stack(
            DecoderLayer(d_model, nhead, dim_feedforward), num_decoder_layers, nn.LayerNorm(d_model)
        )
        self.text_encoder = transformers.RobertaModel(text_config)
        self.resizer = FeatureResizer(text_config.hidden_size, d_model)
        self.d_model = d_model

    def encode(
        self,
        src: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Image features ``(B, C, h, w)`` (already projected to ``d_model``), their padding
        mask ``(B, h, w)`` and positions, token ids / attention mask ``(B, T)`` -> the encoded
        ``memory`` ``(hw + T, B, C)``, its ``padding`` ``(B, hw + T)``, ``pos`` and
        ``text_memory`` ``(T, B, C)`` (the encoded text tokens)."""
        src = src.flatten(2).permute(2, 0, 1)
        pos = pos.flatten(2).permute(2, 0, 1)
        mask = mask.flatten(1)
        text = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        text_resized = self.resizer(text.last_hidden_state.transpose(0, 1))
        memory = torch.cat([src, text_resized], dim=0)
        padding = torch.cat([mask, attention_mask.ne(1)], dim=1)
        pos = torch.cat([pos, torch.zeros_like(text_resized)], dim=0)
        for layer in self.encoder.layers:
            memory = layer(memory, padding, pos)
        return {
            "memory": memory,
            "padding": padding,
            "pos": pos,
            "text_memory": memory[-len(text_resized) :],
        }

    def decode(self, encoded: dict[str, torch.Tensor], query_embed: torch.Tensor) -> torch.Tensor:
        """Learned queries ``(Q, C)`` -> the last decoder layer's normalised output ``(B, Q, C)``."""
        batch = encoded["memory"].shape[1]
        query_pos = query_embed.unsqueeze(1).repeat(1, batch, 1)
        output = torch.zeros_like(query_pos)
        for layer in self.decoder.layers:
            output = layer(output, encoded["memory"], encoded["padding"], encoded["pos"], query_pos)
        return self.decoder.norm(output).transpose(0, 1)
