"""Query-to-patch similarity maps and where a patch grid lies on the input image.

A *query* is one embedding ``(D,)``: a CLIP text embedding of a phrase (training-free), or a
multimodal LLM's ``<SEG>`` token projected to the image tokens' space. Its similarity with the
image's patch tokens is a map on the patch grid ``(h, w)``.

The grid covers a rectangle of the input image (:class:`GridPlacement`): the whole image when
the encoder saw all of it, or a centred square when it saw a CLIP-style centre crop (LLaVA's
image processor: short side resized, centre cropped). Everything outside the rectangle is
*padding*: no token says anything about it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError, PromptError
from ovseg.models.backbones.templates import resolve_templates

__all__ = [
    "GridPlacement",
    "encode_phrase",
    "min_max_normalize",
    "query_similarity",
    "tokens_to_grid",
]

_EPS = 1e-6  # guards floors of ratios that are integers in exact arithmetic


@dataclass(frozen=True)
class GridPlacement:
    """The input-image rectangle a patch grid covers.

    Attributes:
        image_size: ``(H, W)`` of the input image, in pixels.
        region: ``(x0, y0, x1, y1)`` continuous input-image coordinates of the covered
            rectangle (pixel edges; ``x1``/``y1`` exclusive). ``None`` means the whole image.
    """

    image_size: tuple[int, int]
    region: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        height, width = (int(v) for v in self.image_size)
        if height <= 0 or width <= 0:
            raise ConfigError(f"image_size must be positive, got {self.image_size}.")
        object.__setattr__(self, "image_size", (height, width))
        if self.region is not None:
            x0, y0, x1, y1 = (float(v) for v in self.region)
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise ConfigError(
                    f"Grid region {self.region} must be a non-empty rectangle inside the "
                    f"{width}x{height} image (x0, y0, x1, y1 in input pixels)."
                )
            object.__setattr__(self, "region", (x0, y0, x1, y1))

    @classmethod
    def whole(cls, height: int, width: int) -> GridPlacement:
        """The grid covers the whole image (no padding)."""
        return cls((height, width), None)

    @classmethod
    def center_crop(cls, height: int, width: int) -> GridPlacement:
        """The grid covers the centred ``s x s`` square, ``s = min(H, W)``.

        This is what an encoder sees after CLIP's preprocessing (short side resized to the input
        size, then a centre crop), up to the rounding of the resize.
        """
        side = min(height, width)
        x0, y0 = (width - side) / 2.0, (height - side) / 2.0
        return cls((height, width), (x0, y0, x0 + side, y0 + side))

    @classmethod
    def create(
        cls,
        image_size: tuple[int, int],
        region: str | Sequence[float] | None = None,
    ) -> GridPlacement:
        """From ``None`` / ``"whole"``, ``"center_crop"`` or an ``(x0, y0, x1, y1)`` rectangle."""
        height, width = image_size
        if region is None or region == "whole":
            return cls.whole(height, width)
        if region == "center_crop":
            return cls.center_crop(height, width)
        if isinstance(region, str):
            raise ConfigError(
                f"Unknown grid region {region!r}; use 'whole', 'center_crop' or (x0, y0, x1, y1)."
            )
        return cls((height, width), tuple(float(v) for v in region))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of the covered rectangle (the image for a whole-image grid)."""
        height, width = self.image_size
        return self.region if self.region is not None else (0.0, 0.0, float(width), float(height))

    def padding_cells(self, grid_h: int, grid_w: int) -> tuple[int, int, int, int]:
        """Whole grid cells ``(top, bottom, left, right)`` that fit between the grid and the image
        border, for cells of the size the ``grid_h x grid_w`` grid has on the image.

        ``left = floor(x0 / cell_w)``, ``right = floor((W - x1) / cell_w)`` (rows alike). For a
        centre crop this is READ's ``pad_w = (int(W * s_g / s) - s_g) // 2`` on both sides
        (``s = min(H, W)``, ``s_g`` the grid side): ``floor((W s_g / s - s_g) / 2)`` equals it
        because ``floor(a / 2) = floor(floor(a) / 2)`` for real ``a``. A border narrower than a
        cell gets no padding cell; SasP then spreads the grid's cells over the whole image (its
        cell-to-pixel scale is image size / padded grid size), as READ does.
        """
        height, width = self.image_size
        x0, y0, x1, y1 = self.bounds
        cell_w, cell_h = (x1 - x0) / grid_w, (y1 - y0) / grid_h
        return (
            math.floor(y0 / cell_h + _EPS),
            math.floor((height - y1) / cell_h + _EPS),
            math.floor(x0 / cell_w + _EPS),
            math.floor((width - x1) / cell_w + _EPS),
        )

    def cell_centers(self, grid_h: int, grid_w: int) -> tuple[np.ndarray, np.ndarray]:
        """Input-image ``x`` ``(grid_w,)`` and ``y`` ``(grid_h,)`` of the grid cells' centres."""
        x0, y0, x1, y1 = self.bounds
        xs = x0 + (np.arange(grid_w) + 0.5) * (x1 - x0) / grid_w
        ys = y0 + (np.arange(grid_h) + 0.5) * (y1 - y0) / grid_h
        return xs.astype(np.float32), ys.astype(np.float32)

    def to_image(self, grid: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Spread a grid map ``(h, w)`` over the input image -> ``(H, W)`` float32.

        The grid is resized bilinearly (``align_corners=False``) to the covered rectangle
        (rounded to whole pixels) and the rest of the image is ``fill``. READ's own map goes
        through the encoder's crop size first (grid -> 336 x 336 -> zero padding -> image
        size); one resize straight to the rectangle gives the same map up to interpolation
        rounding, without tying it to one encoder's input size.
        """
        height, width = self.image_size
        grid = grid.float()[None, None]
        if self.region is None:
            return F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)[
                0, 0
            ]
        x0, y0, x1, y1 = (int(round(v)) for v in self.region)
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        inside = F.interpolate(grid, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
        out = grid.new_full((height, width), float(fill))
        out[y0:y1, x0:x1] = inside[0, 0]
        return out


def min_max_normalize(values: torch.Tensor) -> torch.Tensor:
    """``(v - min) / (max - min)`` over the whole tensor (float32).

    A constant map carries no evidence for any place; it normalises to zeros (READ divides by
    zero there).
    """
    values = values.float()
    low, high = values.min(), values.max()
    span = high - low
    if float(span) <= 0.0:
        return torch.zeros_like(values)
    return (values - low) / span


def tokens_to_grid(
    tokens: torch.Tensor | np.ndarray, grid_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Image tokens as a ``(D, h, w)`` float32 grid.

    Args:
        tokens: ``(D, h, w)`` (ovseg's dense tokens), ``(1, D, h, w)``, or ``(h * w, D)`` in
            row-major patch order (a transformer's image-token sequence, e.g. LLaVA's hidden
            states between the image start and end tokens).
        grid_size: ``(h, w)`` for a token sequence; default: a square grid.
    """
    tokens = torch.as_tensor(tokens).float()
    if tokens.ndim == 4 and tokens.shape[0] == 1:
        tokens = tokens[0]
    if tokens.ndim == 3:
        return tokens
    if tokens.ndim != 2:
        raise ConfigError(
            f"Image tokens must be (D, h, w) or (h*w, D), got shape {tuple(tokens.shape)}."
        )
    count, dim = tokens.shape
    if grid_size is None:
        side = math.isqrt(count)
        if side * side != count:
            raise ConfigError(
                f"{count} image tokens do not form a square grid; pass grid_size=(h, w)."
            )
        grid_size = (side, side)
    grid_h, grid_w = (int(v) for v in grid_size)
    if grid_h * grid_w != count:
        raise ConfigError(f"grid_size {grid_size} does not hold the {count} image tokens given.")
    return tokens.t().reshape(dim, grid_h, grid_w)


def query_similarity(
    query: torch.Tensor | np.ndarray,
    tokens: torch.Tensor | np.ndarray,
    *,
    grid_size: tuple[int, int] | None = None,
    metric: str = "cosine",
) -> torch.Tensor:
    """Similarity of one query ``(D,)`` with every image token -> ``(h, w)`` float32.

    ``metric="dot"`` is READ's formulation: its ``compute_similarity_map`` (CLIP Surgery's
    feature product with one query, whose re-weighting is then exactly 1) reduces to the dot
    product of the ``<SEG>`` hidden state and each image token. ``"cosine"`` L2-normalises both
    first (CLIP's joint space). The scale of the query cancels in the min-max normalisation that
    follows; the tokens' norms do not, which is where the two differ.
    """
    grid = tokens_to_grid(tokens, grid_size)
    query = torch.as_tensor(query).float().reshape(-1).to(grid.device)
    if query.numel() != grid.shape[0]:
        raise ConfigError(
            f"The query has {query.numel()} dimensions but the image tokens have "
            f"{grid.shape[0]}; project them into one space first."
        )
    if metric == "cosine":
        grid = F.normalize(grid, dim=0)
        query = F.normalize(query, dim=0)
    elif metric != "dot":
        raise ConfigError(f"metric must be 'cosine' or 'dot', not {metric!r}.")
    return torch.einsum("dhw,d->hw", grid, query)


@torch.inference_mode()
def encode_phrase(
    backbone, phrase: str, templates: str | Sequence[str] | None = None
) -> torch.Tensor:
    """A phrase as a CLIP query ``(D,)``, L2-normalised.

    With ``templates=None`` this is ``backbone.encode_text([phrase])[0]`` (the backbone's own
    templates, cached). Otherwise the same ensemble with these templates (a set name such as
    ``none`` / ``photo`` / ``imagenet80``, or strings with ``{}``): each rendering encoded and
    normalised, averaged, renormalised.
    """
    if not isinstance(phrase, str) or not phrase.strip():
        raise PromptError(f"A referring phrase must be a non-empty string, got {phrase!r}.")
    if templates is None:
        return backbone.encode_text([phrase])[0]
    prompts = [template(phrase) for template in resolve_templates(templates)]
    tokens = backbone.tokenizer(prompts).to(backbone.device)
    embeds = F.normalize(backbone.model.encode_text(tokens).float(), dim=-1)
    return F.normalize(embeds.mean(dim=0), dim=0)
