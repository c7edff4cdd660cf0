"""Context-aware prompting, vision-to-language side: DenseCLIP's context decoder.

The class embeddings ``t`` (``(B, K, D)``) query the visual context ``z = [global; dense]``
(``(B, 1 + hw, D)``) with a small transformer decoder, and the result nudges the text::

    t' = t + gamma * out_proj(decoder(text_proj(t), memory_proj(z)))

with ``gamma`` a learnable ``(D,)`` vector initialised to ``1e-4`` (it lives in the segmentor).
Layout, as the reference code builds it:

* ``memory_proj``: LayerNorm(D) -> Linear(D, W) -> LayerNorm(W);
* ``text_proj``: LayerNorm(D) -> Linear(D, W);
* each decoder layer (pre-norm): ``x += SelfAttn(LN1(x))``; ``x += CrossAttn(LN2(x), memory)``;
  ``x += Dropout(MLP(LN3(x)))`` with ``MLP = Linear(W, 4W) -> GELU -> Dropout -> Linear(4W, W)``;
  attentions have bias-free q/k/v projections, scale ``(W / heads) ** -0.5`` and an output
  projection followed by dropout; memory keys and values are not normalised again;
* ``out_proj``: LayerNorm(W) -> Linear(W, D).

Linear weights start from a truncated normal (std 0.02), biases at 0, LayerNorms at (1, 0).
Defaults follow the ADE20K recipes: width 256, 4 heads, 3 layers, dropout 0.1.
"""

from __future__ import annotations

from torch import Tensor, nn

from ovseg.errors import ConfigError


class MultiHeadAttention(nn.Module):
    """Attention of ``(B, N, W)`` queries over ``(B, M, W)`` keys/values -> ``(B, N, W)``."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(f"Decoder width {width} is not divisible by {heads} heads.")
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        batch, n, width = query.shape
        m = key.shape[1]
        head_dim = width // self.heads
        q = self.q_proj(query).reshape(batch, n, self.heads, head_dim)
        k = self.k_proj(key).reshape(batch, m, self.heads, head_dim)
        v = self.v_proj(value).reshape(batch, m, self.heads, head_dim)
        weights = (q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1)) * self.scale  # (B, h, N, M)
        out = weights.softmax(dim=-1) @ v.permute(0, 2, 1, 3)  # (B, h, N, hd)
        out = out.permute(0, 2, 1, 3).reshape(batch, n, width)
        return self.proj_drop(self.proj(out))


class ContextDecoderLayer(nn.Module):
    """Pre-norm self-attention, cross-attention to the visual memory, and an MLP."""

    def __init__(self, width: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(width, heads, dropout)
        self.cross_attn = MultiHeadAttention(width, heads, dropout)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.norm3 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(width, width * 4),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(width * 4, width),
        )

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y)
        x = x + self.cross_attn(self.norm2(x), memory, memory)
        return x + self.dropout(self.mlp(self.norm3(x)))


class ContextDecoder(nn.Module):
    """Text queries attend to the visual context; returns the text update ``(B, K, D)``.

    Args:
        visual_dim: ``D``, CLIP's joint embedding size (text and visual context).
        width: decoder width ``W`` (256).
        heads: attention heads (4).
        layers: decoder layers (3 in the ADE20K recipes).
        dropout: dropout of attention outputs and MLPs (0.1).
    """

    def __init__(
        self,
        visual_dim: int,
        width: int = 256,
        heads: int = 4,
        layers: int = 3,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.memory_proj = nn.Sequential(
            nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width), nn.LayerNorm(width)
        )
        self.text_proj = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width))
        self.decoder = nn.ModuleList(
            ContextDecoderLayer(width, heads, dropout) for _ in range(int(layers))
        )
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, visual_dim))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, text: Tensor, visual: Tensor) -> Tensor:
        """``text (B, K, D)``, ``visual (B, 1 + hw, D)`` -> ``(B, K, D)``."""
        memory = self.memory_proj(visual)
        x = self.text_proj(text)
        for layer in self.decoder:
            x = layer(x, memory)
        return self.out_proj(x)
