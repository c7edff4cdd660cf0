"""Context-aware prompting, text side: learnable context tokens in a frozen CLIP text encoder.

DenseCLIP replaces CLIP's hand-written templates by ``N`` learnable context vectors placed
between the start token and the class-name tokens::

    [SOT] [ctx_1] ... [ctx_N] [class-name tokens] [EOT] [pad ...]

The sequence runs through CLIP's (frozen) text transformer with its causal mask and the first
``len(sequence)`` positional embeddings; the output at the EOT position, after ``ln_final`` and
the text projection, is the class embedding ``(K, D)`` (not normalised). Gradients reach the
contexts through the frozen encoder.

The reference tokenises names to 5 tokens (``SOT`` + up to 3 name tokens + ``EOT``) with 8
contexts, 13 positions in all. Because the mask is causal and the output is read at the EOT,
tokens after it do not change the result, so any padded length gives the same embedding; here
each vocabulary is padded to its longest name, and names may use every position the model has
(``context_length - N``), which lets test-time vocabularies hold longer names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ovseg.errors import ConfigError, VocabularyError


class FrozenTextEncoder(nn.Module):
    """CLIP's text transformer fed with token *embeddings* instead of token ids (frozen).

    Holds the modules of an open_clip ``CLIP`` model's text tower (shared, not copied):
    ``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``,
    ``text_projection`` and the causal ``attn_mask``.
    """

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
        if not all(hasattr(clip_model, name) for name in needed):
            raise ConfigError(
                f"{type(clip_model).__name__} has no CLIP-style text tower (token_embedding, "
                "transformer, ln_final); DenseCLIP's prompting needs an open_clip CLIP model."
            )
        pool_type = getattr(clip_model, "text_pool_type", "argmax")
        if pool_type not in ("argmax", "eos"):
            raise ConfigError(
                f"The text tower pools with {pool_type!r}; context prompting reads the output at "
                "the end-of-text token, so it needs an 'argmax' or 'eos' pooled text tower."
            )
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        mask = getattr(clip_model, "attn_mask", None)
        self.register_buffer("attn_mask", mask.clone() if mask is not None else None, False)
        self.context_length = int(self.positional_embedding.shape[0])
        self.width = int(self.token_embedding.weight.shape[1])
        self.requires_grad_(False)

    @property
    def embed_dim(self) -> int:
        proj = self.text_projection
        if proj is None:
            return self.width
        return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        return super().train(False)  # frozen: always in eval mode (no dropout)

    def forward(self, embeddings: Tensor, eot_index: Tensor) -> Tensor:
        """``(K, L, width)`` input embeddings, ``(K,)`` EOT positions -> ``(K, D)`` embeddings."""
        length = embeddings.shape[1]
        if length > self.context_length:
            raise VocabularyError(
                f"A prompt of {length} tokens exceeds the text encoder's {self.context_length}; "
                "use shorter class names or fewer context tokens."
            )
        x = embeddings + self.positional_embedding[:length].to(embeddings.dtype)
        mask = self.attn_mask[:length, :length] if self.attn_mask is not None else None
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        proj = self.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


class PromptLearner(nn.Module):
    """Learnable contexts + frozen text encoder: class names -> prompted class embeddings.

    Args:
        clip_model: an open_clip ``CLIP`` model (its text tower is used frozen).
        tokenizer: the model's open_clip tokenizer (``tokenizer(texts, context_length)``).
        num_contexts: ``N`` learnable context vectors (DenseCLIP: 8).

    ``contexts`` is ``(1, N, width)``, initialised with ``trunc_normal_`` (std 1, cut at +-2)
    as in the reference.
    """

    def __init__(self, clip_model: nn.Module, tokenizer, num_contexts: int = 8) -> None:
        super().__init__()
        if int(num_contexts) < 1:
            raise ConfigError(f"num_contexts must be at least 1, got {num_contexts}.")
        self.text_encoder = FrozenTextEncoder(clip_model)
        self.tokenizer = tokenizer
        self.num_contexts = int(num_contexts)
        self.eos_token_id = getattr(clip_model, "text_eos_id", None)
        self.pool_type = getattr(clip_model, "text_pool_type", "argmax")
        if self.num_contexts + 2 > self.text_encoder.context_length:
            raise ConfigError(
                f"{num_contexts} contexts leave no room for class names in a text encoder of "
                f"{self.text_encoder.context_length} positions."
            )
        self.contexts = nn.Parameter(torch.empty(1, self.num_contexts, self.text_encoder.width))
        nn.init.trunc_normal_(self.contexts)

    @property
    def embed_dim(self) -> int:
        return self.text_encoder.embed_dim

    @property
    def max_name_tokens(self) -> int:
        """Token budget of a tokenised name, start and end tokens included."""
        return self.text_encoder.context_length - self.num_contexts

    def tokenize(self, names: Sequence[str]) -> Tensor:
        """Class names -> ``(K, L)`` int64 token ids ``[SOT, name..., EOT, 0...]``.

        ``L`` is the longest tokenised name. Raises VocabularyError for empty vocabularies and
        names that do not fit in ``max_name_tokens``.
        """
        names = list(names)
        if not names:
            raise VocabularyError("No class names given; pass at least one name.")
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise VocabularyError(f"Class names must be non-empty strings, got {name!r}.")
        full = self.tokenizer(names, context_length=self.text_encoder.context_length)
        ends = self._eot_positions(full)
        too_long = [n for n, e in zip(names, ends.tolist()) if e >= self.max_name_tokens]
        if too_long:
            raise VocabularyError(
                f"Class names {too_long[:3]} are too long for {self.num_contexts} context tokens "
                f"(at most {self.max_name_tokens - 2} name tokens); shorten them."
            )
        return full[:, : int(ends.max()) + 1].contiguous()

    def _eot_positions(self, tokens: Tensor) -> Tensor:
        if self.pool_type == "eos" and self.eos_token_id is not None:
            return (tokens == self.eos_token_id).int().argmax(dim=-1)
        return tokens.argmax(dim=-1)

    def prompt_embeddings(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``(K, L)`` token ids -> ``(K, 1 + N + L - 1, width)`` prompt embeddings and the
        ``(K,)`` EOT positions in them (the name's EOT position shifted by ``N``)."""
        embeds = self.text_encoder.token_embedding(tokens)
        contexts = self.contexts.to(embeds.dtype).expand(tokens.shape[0], -1, -1)
        sequence = torch.cat([embeds[:, :1], contexts, embeds[:, 1:]], dim=1)
        return sequence, self._eot_positions(tokens) + self.num_contexts

    def forward(self, tokens: Tensor) -> Tensor:
        """``(K, L)`` token ids (from :meth:`tokenize`) -> ``(K, D)`` prompted embeddings."""
        sequence, eot = self.prompt_embeddings(tokens)
        return self.text_encoder(sequence, eot)

    def encode_names(self, names: Sequence[str]) -> Tensor:
        """Class names -> ``(K, D)`` prompted, unnormalised embeddings."""
        return self(self.tokenize(names).to(self.contexts.device))
