"""The MDETR network (Kamath et al., ICCV 2021) with the reference's parameter names.

``MdetrModel(images, pixel_mask, input_ids, attention_mask)`` returns, per image, ``Q`` learned
queries' predictions:

* ``pred_logits`` ``(B, Q, num_classes + 1)``: a soft token prediction over caption token
  positions ``0 .. num_classes - 1`` (255 for the released models), the last class meaning "no
  object";
* ``pred_boxes`` ``(B, Q, 4)``: ``(cx, cy, w, h)`` in ``[0, 1]``, relative to the unpadded image;
* with the contrastive-alignment heads: ``proj_queries`` ``(B, Q, 64)`` and ``proj_tokens``
  ``(B, T, 64)``, L2-normalised.

The architecture of a release (``hubconf.py`` of ashkamath/mdetr): hidden 256, 8 heads, 6
encoder and 6 decoder layers, FFN 2048, 100 queries, 255 token classes, RoBERTa-base text
encoder, contrastive-alignment projections to 64 (``contrastive_align``), image backbone by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.models.detectors.mdetr_backbone import build_backbone
from ovseg.models.detectors.mdetr_transformer import MdetrTransformer

__all__ = ["ROBERTA_BASE", "MdetrArchitecture", "MdetrModel"]

#: ``roberta-base``'s configuration (the released models' text encoder)
ROBERTA_BASE: dict[str, Any] = {
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}


@dataclass(frozen=True)
class MdetrArchitecture:
    """The shape of an MDETR model (defaults: the released pre-trained / REC models)."""

    backbone: str = "resnet101"
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    num_queries: int = 100
    num_classes: int = 255
    contrastive_align: bool = True
    contrastive_hdim: int = 64
    text_config: dict[str, Any] = field(default_factory=lambda: dict(ROBERTA_BASE))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (``layers.0`` ...)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, outs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MdetrModel(nn.Module):
    """MDETR for detection / grounding (see the module docstring)."""

    def __init__(self, arch: MdetrArchitecture) -> None:
        super().__init__()
        import transformers

        self.arch = arch
        hidden = arch.hidden_dim
        self.transformer = MdetrTransformer(
            transformers.RobertaConfig(**arch.text_config),
            d_model=hidden,
            nhead=arch.nheads,
            num_encoder_layers=arch.enc_layers,
            num_decoder_layers=arch.dec_layers,
            dim_feedforward=arch.dim_feedforward,
        )
        self.class_embed = nn.Linear(hidden, arch.num_classes + 1)
        self.bbox_embed = MLP(hidden, hidden, 4, 3)
        self.query_embed = nn.Embedding(arch.num_queries, hidden)
        self.backbone = build_backbone(arch.backbone, hidden)
        self.input_proj = nn.Conv2d(self.backbone.num_channels, hidden, kernel_size=1)
        if arch.contrastive_align:
            self.contrastive_align_projection_image = nn.Linear(hidden, arch.contrastive_hdim)
            self.contrastive_align_projection_text = nn.Linear(hidden, arch.contrastive_hdim)

    @property
    def max_text_positions(self) -> int:
        """Caption tokens the heads can point at (token positions ``< num_classes``)."""
        return int(self.arch.num_classes)

    def forward(
        self,
        images: torch.Tensor,
        pixel_mask: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``images`` ``(B, 3, H, W)`` normalised and zero-padded, ``pixel_mask`` ``(B, H, W)``
        True on padding, ``input_ids`` / ``attention_mask`` ``(B, T)`` -> the predictions."""
        features, mask, pos = self.backbone(images, pixel_mask)
        encoded = self.transformer.encode(
            self.input_proj(features), mask, pos, input_ids, attention_mask
        )
        hidden = self.transformer.decode(encoded, self.query_embed.weight)
        out = {
            "pred_logits": self.class_embed(hidden),
            "pred_boxes": self.bbox_embed(hidden).sigmoid(),
        }
        if self.arch.contrastive_align:
            out["proj_queries"] = F.normalize(
                self.contrastive_align_projection_image(hidden), p=2, dim=-1
            )
            out["proj_tokens"] = F.normalize(
                self.contrastive_align_projection_text(encoded["text_memory"]).transpose(0, 1),
                p=2,
                dim=-1,
            )
        return out
