"""Pixel-adaptive mask refinement (PAMR; Araslanov & Roth, CVPR 2020).

Used as post-processing by NACLIP (on by default, 10 iterations, dilations 8 and 16) and
available, off by default, in SCLIP. Both apply it to the raw cosine-similarity maps (before the
logit scale and the softmax), at the original image resolution, with the normalised network
input resized (bilinear) to that resolution as the guidance image.

One refinement step replaces every mask value by a weighted mean of its 8 neighbours at each
dilation ``d`` (offsets ``d * (dy, dx)``, ``dy, dx in {-1, 0, 1}``, not the pixel itself; image
borders are replicated). The weights come from the guidance image only and are computed once:

    kappa_n = -|I(p) - I(p + o_n)| / (1e-8 + 0.1 * sigma(p))      per colour channel
    w_n     = softmax_n( mean_over_channels(kappa_n) )

where ``sigma(p)`` is the unbiased standard deviation, per channel, of the 3x3 samples
(centre included) taken at every dilation together.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PAMR"]

_NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


class PAMR(nn.Module):
    """Refine dense class maps so they follow the edges of the image.

    Args:
        num_iter: number of propagation steps (NACLIP and SCLIP use 10).
        dilations: neighbourhood dilations in pixels (NACLIP and SCLIP use ``(8, 16)``).
    """

    def __init__(self, num_iter: int = 10, dilations: Sequence[int] = (8, 16)) -> None:
        super().__init__()
        if num_iter < 0:
            raise ValueError(f"num_iter must be >= 0, got {num_iter}.")
        dilations = tuple(int(d) for d in dilations)
        if not dilations or any(d < 1 for d in dilations):
            raise ValueError(f"dilations must be positive integers, got {dilations}.")
        self.num_iter = int(num_iter)
        self.dilations = dilations

    def extra_repr(self) -> str:
        return f"num_iter={self.num_iter}, dilations={self.dilations}"

    def _shifted(self, x: Tensor, include_centre: bool = False) -> Iterator[Tensor]:
        """Yield ``x`` sampled at each neighbour offset (replicate padding), dilation-major.

        ``x``: ``(B, K, H, W)``; every yielded tensor has the same shape.
        """
        height, width = x.shape[-2:]
        offsets = ((0, 0), *_NEIGHBOUR_OFFSETS) if include_centre else _NEIGHBOUR_OFFSETS
        for d in self.dilations:
            padded = F.pad(x, (d, d, d, d), mode="replicate")
            for dy, dx in offsets:
                top, left = d + dy * d, d + dx * d
                yield padded[..., top : top + height, left : left + width]

    def affinity(self, image: Tensor, band_rows: int = 256) -> Tensor:
        """Neighbour weights from the guidance image.

        Args:
            image: ``(B, 3, H, W)`` float guidance image (any normalisation; the weights are
                invariant to a per-channel affine map with positive scale).
            band_rows: rows computed at a time (each band with ``max(dilations)`` rows of
                context above and below), so the ``(B, 3, P, rows, W)`` temporaries stay small;
                every pixel's weights are the same as in one pass over the whole image.

        Returns:
            ``(B, P, H, W)`` weights, ``P = 8 * len(dilations)``, summing to 1 over ``P``.
        """
        height = image.shape[-2]
        halo = max(self.dilations)
        bands = []
        for top in range(0, height, max(1, band_rows)):
            bottom = min(top + band_rows, height)
            start, stop = max(0, top - halo), min(height, bottom + halo)
            weights = self._band_affinity(image[..., start:stop, :])
            bands.append(weights[..., top - start : bottom - start, :])
        return bands[0] if len(bands) == 1 else torch.cat(bands, dim=-2)

    def _band_affinity(self, image: Tensor) -> Tensor:
        samples = torch.stack(list(self._shifted(image, include_centre=True)), dim=2)
        sigma = samples.std(dim=2, keepdim=True)  # (B, 3, 1, H, W), unbiased
        del samples
        neighbours = torch.stack(list(self._shifted(image)), dim=2)  # (B, 3, P, H, W)
        kappa = -(image.unsqueeze(2) - neighbours).abs() / (1e-8 + 0.1 * sigma)
        return torch.softmax(kappa.mean(dim=1), dim=1)

    def forward(self, image: Tensor, masks: Tensor, weights: Tensor | None = None) -> Tensor:
        """Refine ``masks`` with the guidance ``image``.

        Args:
            image: ``(B, 3, H, W)`` float guidance image.
            masks: ``(B, C, h, w)`` float class maps (logits or probabilities); resized
                bilinearly (``align_corners=True``) to ``(H, W)`` when the size differs.
            weights: ``self.affinity(image)`` when the caller already has it (refining the
                classes of one image in several chunks computes it once).

        Returns:
            ``(B, C, H, W)`` refined maps, in the dtype of ``masks``.
        """
        if image.dim() != 4 or masks.dim() != 4 or image.shape[0] != masks.shape[0]:
            raise ValueError(
                "PAMR expects image (B, 3, H, W) and masks (B, C, h, w) with the same B, got "
                f"{tuple(image.shape)} and {tuple(masks.shape)}."
            )
        out_dtype = masks.dtype
        image = image.float()
        masks = masks.float()
        if masks.shape[-2:] != image.shape[-2:]:
            masks = F.interpolate(masks, size=image.shape[-2:], mode="bilinear", align_corners=True)
        if weights is None:
            weights = self.affinity(image)
        for _ in range(self.num_iter):
            # Accumulate neighbour by neighbour: never holds a (B, C, P, H, W) tensor.
            refined = torch.zeros_like(masks)
            for n, shifted in enumerate(self._shifted(masks)):
                refined.addcmul_(weights[:, n : n + 1], shifted)
            masks = refined
        return masks.to(out_dtype)
