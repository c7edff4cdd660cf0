"""OWL-ViT's detection heads on an open_clip ViT image tower (Minderer et al., 2022).

:class:`OwlClipModel` turns images into one box and one class embedding per patch token, the
architecture of transformers' ``OwlViTForObjectDetection`` (``image_text_embedder``,
``box_predictor``, ``class_predictor``) on an open_clip ``VisionTransformer``:

1. the tower runs at the model's input size; its positional embedding is resized to the patch
   grid (:func:`~ovseg.models.backbones.dense_vit.interpolate_pos_embed`) when that differs from
   the grid it was trained on; the final tokens go through the tower's ``ln_post``;
2. ``merge_class_token`` (OWL: on): every patch token is multiplied element-wise by the class
   token, then a new ``LayerNorm``; off: the patch tokens alone through the ``LayerNorm``;
3. box head: ``Linear(C, C) -> GELU -> Linear(C, C) -> GELU -> Linear(C, 4)``, plus OWL's box
   bias, then a sigmoid: ``(cx, cy, w, h)`` normalised to the input frame. The bias puts a
   patch's box centre at the patch grid's corner coordinate ``((i + 1) / w, (j + 1) / h)`` and its
   size at one patch (``inverse_sigmoid`` of both, with OWL's 1e-4 guard);
4. class head: ``Linear(C, D)`` to the text space, L2-normalised (+1e-6), dot product with the
   L2-normalised query embeddings, then ``(logit + shift(x)) * (ELU(scale(x)) + 1)`` with the
   learned per-token ``shift`` and ``scale`` (``Linear(C, 1)`` each).

Options that differ from OWL-ViT (documented, off by default): ``class_init="clip"`` starts the
class head's ``Linear(C, D)`` at the CLIP's own visual projection (and the ``LayerNorm`` at
``ln_post``'s affine), so that at the first step every token is scored like CLIP's dense
tokens; ``prior_prob`` sets the initial ``shift`` bias to ``log(p / (1 - p))`` (the focal-loss
prior of RetinaNet; None leaves PyTorch's default initialisation).

Shapes: images ``(B, 3, S, S)`` (normalised with the CLIP's mean / std), ``P = (S / patch)^2``
tokens in row-major order, queries ``(Q, D)`` or ``(B, Q, D)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.errors import ConfigError
from ovseg.models.backbones.dense_vit import interpolate_pos_embed

__all__ = ["OwlBoxHead", "OwlClassHead", "OwlClipModel", "owl_box_bias", "owl_input"]

CLASS_INITS = ("random", "clip")
PAD_VALUE = 0.5  # OWLv2's grey padding, in [0, 1] before normalisation


def owl_input(
    image: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[Tensor, float]:
    """An ``(H, W, 3)`` uint8 RGB image -> the model input ``(3, size, size)`` float32 and the
    side ``max(H, W)`` in image pixels that the normalised frame spans.

    As OWLv2's processor: the image is scaled to [0, 1], padded at the bottom and right with
    grey (0.5) to a square of side ``max(H, W)``, resized to ``size`` (bilinear, antialiased;
    skipped when the side already is ``size``) and normalised with the CLIP's ``mean`` / ``std``.
    A normalised box times the side is a box in image pixels.
    """
    height, width = image.shape[:2]
    side = max(height, width)
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    if height != width:
        square = torch.full((3, side, side), PAD_VALUE)
        square[:, :height, :width] = pixels
        pixels = square
    if side != size:
        pixels = F.interpolate(
            pixels[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )[0]
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean_t) / std_t, float(side)


def owl_box_bias(grid_h: int, grid_w: int) -> Tensor:
    """OWL's box bias ``(h * w, 4)`` for a patch grid (row-major), see the module docstring."""
    xs = torch.arange(1, grid_w + 1, dtype=torch.float32) / grid_w
    ys = torch.arange(1, grid_h + 1, dtype=torch.float32) / grid_h
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([xx, yy], dim=-1).reshape(-1, 2).clip(0.0, 1.0)
    coord_bias = torch.log(coords + 1e-4) - torch.log1p(-coords + 1e-4)
    size = torch.empty_like(coords)
    size[:, 0], size[:, 1] = 1.0 / grid_w, 1.0 / grid_h
    size_bias = torch.log(size + 1e-4) - torch.log1p(-size + 1e-4)
    return torch.cat([coord_bias, size_bias], dim=-1)


class OwlBoxHead(nn.Module):
    """OWL's box MLP: ``(..., C)`` tokens -> ``(..., 4)`` box logits (before the bias)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense0 = nn.Linear(width, width)
        self.dense1 = nn.Linear(width, width)
        self.dense2 = nn.Linear(width, 4)
        self.gelu = nn.GELU()

    def forward(self, tokens: Tensor) -> Tensor:
        return self.dense2(self.gelu(self.dense1(self.gelu(self.dense0(tokens)))))


class OwlClassHead(nn.Module):
    """OWL's class head: tokens ``(B, P, C)`` and queries -> logits ``(B, P, Q)``."""

    def __init__(self, width: int, embed_dim: int) -> None:
        super().__init__()
        self.dense0 = nn.Linear(width, embed_dim)
        self.logit_shift = nn.Linear(width, 1)
        self.logit_scale = nn.Linear(width, 1)
        self.elu = nn.ELU()

    def embed(self, tokens: Tensor) -> Tensor:
        """Per-token class embeddings ``(B, P, D)``, L2-normalised (+1e-6 as OWL)."""
        embeds = self.dense0(tokens)
        return embeds / (torch.linalg.norm(embeds, dim=-1, keepdim=True) + 1e-6)

    def forward(self, tokens: Tensor, queries: Tensor) -> Tensor:
        """``queries``: ``(Q, D)`` shared by the batch or ``(B, Q, D)``."""
        embeds = self.embed(tokens)
        queries = queries / (torch.linalg.norm(queries, dim=-1, keepdim=True) + 1e-6)
        queries = queries.to(embeds.dtype)
        if queries.ndim == 2:
            logits = embeds @ queries.t()
        else:
            logits = torch.einsum("bpd,bqd->bpq", embeds, queries)
        shift = self.logit_shift(tokens)
        scale = self.elu(self.logit_scale(tokens)) + 1
        return (logits + shift) * scale


class OwlClipModel(nn.Module):
    """An open_clip ViT image tower with OWL-ViT's heads (see the module docstring).

    Args:
        visual: the open_clip ``VisionTransformer`` (trained with the model; its ``proj`` is
            used only by ``class_init="clip"``).
        embed_dim: the CLIP's joint embedding size ``D`` (the text side's output).
        image_size: the square input side ``S`` (a multiple of the patch size).
        merge_class_token: OWL's class-token multiplication (see the module docstring).
        class_init: ``random`` (OWL) or ``clip``.
        prior_prob: initial score of every token and query (None: default init).
    """

    def __init__(
        self,
        visual: nn.Module,
        embed_dim: int,
        image_size: int,
        merge_class_token: bool = True,
        class_init: str = "random",
        prior_prob: float | None = None,
    ) -> None:
        super().__init__()
        if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
            raise ConfigError(
                f"OWL heads need an open_clip ViT image tower, got {type(visual).__name__}."
            )
        if class_init not in CLASS_INITS:
            raise ConfigError(f"class_init must be one of {CLASS_INITS}, not {class_init!r}.")
        patch = visual.conv1.kernel_size
        self.patch_size = int(patch[0] if isinstance(patch, tuple) else patch)
        self.image_size = int(image_size)
        if self.image_size <= 0 or self.image_size % self.patch_size:
            raise ConfigError(
                f"image_size must be a positive multiple of the patch size {self.patch_size}, "
                f"got {image_size}."
            )
        self.visual = visual
        self.merge_class_token = bool(merge_class_token)
        width = int(visual.conv1.out_channels)
        self.layer_norm = nn.LayerNorm(width)
        self.box_head = OwlBoxHead(width)
        self.class_head = OwlClassHead(width, int(embed_dim))
        grid = self.image_size // self.patch_size
        self.register_buffer("box_bias", owl_box_bias(grid, grid), persistent=False)
        if class_init == "clip":
            self._init_class_head_from_clip()
        if prior_prob is not None:
            if not 0.0 < float(prior_prob) < 1.0:
                raise ConfigError(f"prior_prob must be in (0, 1), got {prior_prob!r}.")
            with torch.no_grad():
                self.class_head.logit_shift.bias.fill_(math.log(prior_prob / (1 - prior_prob)))

    def _init_class_head_from_clip(self) -> None:
        proj = getattr(self.visual, "proj", None)
        if not isinstance(proj, Tensor) or proj.shape != self.class_head.dense0.weight.t().shape:
            raise ConfigError(
                "class_init 'clip' needs the image tower's projection (C x D); this tower has "
                "none of that shape."
            )
        with torch.no_grad():
            self.class_head.dense0.weight.copy_(proj.t())
            self.class_head.dense0.bias.zero_()
            post = self.visual.ln_post
            if getattr(post, "weight", None) is not None:
                self.layer_norm.weight.copy_(post.weight)
                self.layer_norm.bias.copy_(post.bias)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    def image_tokens(self, images: Tensor) -> Tensor:
        """Normalised images ``(B, 3, S, S)`` -> OWL's per-patch tokens ``(B, P, C)``."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ConfigError(
                f"OwlClipModel takes {self.image_size} x {self.image_size} inputs, got "
                f"{tuple(images.shape[-2:])}; resize / pad the images first."
            )
        visual = self.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype))
        batch, width, h, w = x.shape
        x = x.reshape(batch, width, h * w).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(batch, -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + interpolate_pos_embed(visual.positional_embedding, (h, w)).to(x.dtype)
        x = visual.ln_pre(x)
        for block in visual.transformer.resblocks:
            x = block(x)
        x = visual.ln_post(x)
        tokens = x[:, 1:] * x[:, :1] if self.merge_class_token else x[:, 1:]
        return self.layer_norm(tokens)

    def predict_boxes(self, tokens: Tensor) -> Tensor:
        """Tokens ``(B, P, C)`` -> boxes ``(B, P, 4)`` ``(cx, cy, w, h)`` in [0, 1]."""
        return torch.sigmoid(self.box_head(tokens) + self.box_bias.to(tokens.dtype))

    def forward(self, images: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``(B, 3, S, S)`` and query embeddings ``(Q, D)`` / ``(B, Q, D)`` ->
        ``(logits (B, P, Q), boxes (B, P, 4))``."""
        tokens = self.image_tokens(images)
        return self.class_head(tokens, queries), self.predict_boxes(tokens)
