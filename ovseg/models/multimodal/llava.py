"""A LLaVA-style multimodal language model: vision tower -> ``mm_projector`` -> LLaMA decoder.

Image tokens: the tower's ``(B, N, C_v)`` patch features (:mod:`.vision`) go through the
projector (LLaVA's ``mm_projector_type``: ``"linear"`` = ``Linear(C_v, D)``; ``"mlpKx_gelu"`` =
``Linear(C_v, D)`` then ``K - 1`` times ``GELU, Linear(D, D)``; ``"identity"``) to ``(B, N, D)``,
``D`` the decoder's hidden size.

Splicing (LLaVA's ``prepare_inputs_labels_for_multimodal``): in each row of ``input_ids`` the
placeholder ``IMAGE_TOKEN_INDEX`` (-200) is replaced by that row's ``N`` image tokens; their
labels are ``IGNORE_INDEX`` and their attention mask 1; rows are right-padded to the longest
(zero embeddings, mask 0, ignored labels). A row without the placeholder is embedded as text.
One image per row (LISA / READ: the CLIP image of a conversation's source image).

After splicing, token ``j`` of a row whose placeholder is at ``p`` sits at ``j`` if ``j < p`` and
at ``j + N - 1`` if ``j > p`` (:func:`expanded_position`); the image tokens occupy
``[p, p + N)``.

The decoder is transformers' ``LlamaForCausalLM`` (weights ``model.*`` and ``lm_head.*``).
:meth:`MultimodalLM.decode` returns the final hidden states (after the decoder's last norm, the
states LISA / READ read ``[SEG]`` from) and the logits.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ovseg.errors import ConfigError
from ovseg.models.multimodal.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

__all__ = [
    "MultimodalLM",
    "SplicedInputs",
    "build_projector",
    "expanded_position",
    "splice_image_tokens",
]


def build_projector(projector_type: str, in_dim: int, out_dim: int) -> nn.Module:
    """LLaVA's ``mm_projector`` (parameter names as in its checkpoints: ``0.*``, ``2.*`` ...)."""
    if projector_type == "linear":
        return nn.Linear(in_dim, out_dim)
    if projector_type == "identity":
        if in_dim != out_dim:
            raise ConfigError(f"An identity projector needs equal sizes, got {in_dim}, {out_dim}.")
        return nn.Identity()
    match = re.fullmatch(r"mlp(\d+)x_gelu", projector_type)
    if match and int(match.group(1)) >= 1:
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(int(match.group(1)) - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        return nn.Sequential(*layers)
    raise ConfigError(
        f"Unknown mm_projector_type {projector_type!r}; use 'linear', 'mlp2x_gelu' (mlpKx_gelu) "
        "or 'identity'."
    )


@dataclass
class SplicedInputs:
    """Decoder inputs after splicing.

    Attributes:
        inputs_embeds: ``(R, L', D)``.
        attention_mask: ``(R, L')`` int64.
        labels: ``(R, L')`` int64 or None.
        image_starts: per row, the position of its first image token (-1: no image).
        num_image_tokens: ``N``, tokens per image.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    image_starts: list[int]
    num_image_tokens: int


def expanded_position(token_index: int, image_start: int, num_image_tokens: int) -> int:
    """Position after splicing of token ``token_index`` (see the module docstring)."""
    if image_start < 0 or token_index < image_start:
        return token_index
    if token_index == image_start:
        raise ConfigError("The image placeholder has no single position after splicing.")
    return token_index + num_image_tokens - 1


def splice_image_tokens(
    embed_tokens: nn.Module,
    input_ids: torch.Tensor,
    image_features: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> SplicedInputs:
    """Replace each row's ``IMAGE_TOKEN_INDEX`` by its image tokens (module docstring).

    Args:
        embed_tokens: the decoder's input embedding.
        input_ids: ``(R, L)`` int64.
        image_features: ``(R, N, D)`` projected image tokens, one image per row.
        attention_mask: ``(R, L)`` (None: all ones).
        labels: ``(R, L)`` or None.
    """
    rows, length = input_ids.shape
    if image_features.shape[0] != rows:
        raise ConfigError(
            f"{image_features.shape[0]} images for {rows} token rows; give one image per row."
        )
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    num = int(image_features.shape[1])
    embeds, masks, targets, starts = [], [], [], []
    for row in range(rows):
        ids = input_ids[row]
        where = torch.nonzero(ids == IMAGE_TOKEN_INDEX).flatten()
        if len(where) > 1:
            raise ConfigError(f"Row {row} holds {len(where)} <image> placeholders; use one.")
        mask_row = attention_mask[row].to(torch.int64)
        label_row = labels[row] if labels is not None else None
        if len(where) == 0:
            embeds.append(embed_tokens(ids))
            masks.append(mask_row)
            targets.append(label_row)
            starts.append(-1)
            continue
        p = int(where[0])
        feats = image_features[row].to(embed_tokens.weight.dtype)
        embeds.append(torch.cat([embed_tokens(ids[:p]), feats, embed_tokens(ids[p + 1 :])], 0))
        ones = torch.ones(num, dtype=torch.int64, device=mask_row.device)
        masks.append(torch.cat([mask_row[:p], ones, mask_row[p + 1 :]]))
        if label_row is not None:
            ignore = torch.full((num,), IGNORE_INDEX, dtype=label_row.dtype, device=ids.device)
            targets.append(torch.cat([label_row[:p], ignore, label_row[p + 1 :]]))
        starts.append(p)
    width = max(e.shape[0] for e in embeds)
    dim = embeds[0].shape[1]
    out_embeds = embeds[0].new_zeros((rows, width, dim))
    out_mask = torch.zeros((rows, width), dtype=torch.int64, device=input_ids.device)
    out_labels = (
        torch.full((rows, width), IGNORE_INDEX, dtype=torch.int64, device=input_ids.device)
        if labels is not None
        else None
    )
    for row in range(rows):
        n = embeds[row].shape[0]
        out_embeds[row, :n] = embeds[row]
        out_mask[row, :n] = masks[row]
        if out_labels is not None:
            out_labels[row, :n] = targets[row]
    return SplicedInputs(out_embeds, out_mask, out_labels, starts, num)


class MultimodalLM(nn.Module):
    """Vision tower + projector + ``LlamaForCausalLM`` (see the module docstring).

    Args:
        vision_tower: a :class:`~ovseg.models.multimodal.vision.VisionTower` module.
        language_model: a transformers ``LlamaForCausalLM`` (or any causal LM with ``.model``
            returning ``last_hidden_state`` and ``.lm_head``).
        projector_type: LLaVA's ``mm_projector_type``.
    """

    def __init__(
        self, vision_tower: nn.Module, language_model: nn.Module, projector_type: str = "linear"
    ) -> None:
        super().__init__()
        self.vision_tower = vision_tower
        self.language_model = language_model
        self.projector_type = projector_type
        hidden = int(language_model.config.hidden_size)
        self.mm_projector = build_projector(projector_type, int(vision_tower.hidden_size), hidden)

    @property
    def hidden_size(self) -> int:
        return int(self.language_model.config.hidden_size)

    @property
    def num_image_tokens(self) -> int:
        grid = self.vision_tower.grid_size
        return int(grid[0] * grid[1])

    def embed_tokens(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised -> ``(B, N, D)`` projected image tokens."""
        features = self.vision_tower(images)
        weight = next(self.mm_projector.parameters(), None)
        if weight is not None:
            features = features.to(weight.dtype)
        return self.mm_projector(features)

    def splice(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SplicedInputs:
        """Encode ``images`` (one per row of ``input_ids``) and splice them in."""
        return splice_image_tokens(
            self.embed_tokens(), input_ids, self.encode_images(images), attention_mask, labels
        )

    def decode(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """The decoder on embeddings: ``(hidden (R, L, D) after the last norm, logits (R, L, V),
        past_key_values)``."""
        decoder = self.language_model.model
        # transformers >= 5.x names the KV cache ``cache``; earlier ``past_key_values``
        name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else None
        name = name or "past_key_values"
        out = decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            use_cache=use_cache,
            **{name: past_key_values},
        )
        hidden = out.last_hidden_state
        logits = self.language_model.lm_head(hidden)
        return hidden, logits, getattr(out, name, None) if use_cache else None
