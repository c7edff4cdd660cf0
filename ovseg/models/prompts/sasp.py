"""READ's "similarity as points" (SasP): point prompts for SAM from a query's similarity map.

Qian et al., "Reasoning to Attend: Try to Understand How <SEG> Token Works", CVPR 2025; the
steps below follow ``similarity_map_to_points`` of the reference code (rui-qian/READ,
``model/READ.py``), with the settings of its 7B model as defaults:

1. the similarity of the query with every patch token, on the patch grid ``(h, w)``;
2. bilinear down-sampling by ``down_sample`` (2) to ``(h // 2, w // 2)`` (``align_corners=False``,
   no antialiasing), to smooth the map, then min-max normalisation to [0, 1];
3. padding back: where the grid covers only part of the image (LLaVA sees a centre crop),
   whole cells of value -1 are added on each side (:meth:`GridPlacement.padding_cells`), so
   the padded grid spans the image; -1 is below every threshold, so padding never becomes a
   point;
4. positives: cells ``>= t_pos`` (0.8), highest first; negatives: cells in ``[0, t_neg]``
   (0.2), lowest first; neutral: the cells in between, in row-major order (label -1);
   concatenated ``[positives, negatives, neutral]`` and cut to ``num_points`` (30). Sorting is
   stable, so equal values keep row-major order (the reference's ``argsort`` leaves ties
   unspecified);
5. each cell becomes the pixel index ``floor(min((col + 0.5) * W / w_p, W - 1))`` (rows alike),
   ``w_p`` the padded grid width, i.e. the centre of the cell on the image, clamped inside it
   (computed in float64; READ's float32 product can only differ within rounding of an integer);
6. discrete to continuous: the full-resolution map ``S`` (the min-max normalised patch map, not
   down-sampled, spread over the image with zeros outside the covered rectangle,
   :meth:`GridPlacement.to_image`) gives each point the weighted mean of pixel indices with
   weights ``exp(-d^2) * softmax(S)`` (``d`` the distance to the point in pixels, softmax over
   the whole image at temperature 1). The softmax's normaliser cancels, so the weights are
   ``exp(S - d^2)`` normalised over a window of ``refine_radius`` pixels around the point:
   with the default 10, every pixel outside has ``exp(-d^2) <= exp(-121)``, which is exactly
   0 in float32 where the reference computes it, so the window changes nothing.

Coordinates: the reference works in pixel indices (pixel ``i``'s centre at ``i``; SAM's prompt
encoder adds the half pixel itself). :class:`~ovseg.structures.PointPrompts` puts pixel centres at
``i + 0.5``, so 0.5 is added to the result.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.models.prompts.similarity import GridPlacement, min_max_normalize
from ovseg.registry import POINT_SELECTORS
from ovseg.structures import PointPrompts

__all__ = ["SasPSelector", "order_cells", "refine_points"]

PAD_VALUE = -1.0


def order_cells(
    values: torch.Tensor, num_points: int, t_pos: float, t_neg: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SasP's ordering of flattened grid cells (step 4 of the module docstring).

    Args:
        values: ``(N,)`` cell values, normalised to [0, 1]; padding cells hold -1.
        num_points: how many cells to keep.
        t_pos, t_neg: the positive (``>=``) and negative (``<=``) thresholds.

    Returns:
        ``indices`` ``(P,)`` int64 flat cell indices and ``labels`` ``(P,)`` int64 (1 / 0 / -1),
        ``P = min(num_points, number of non-padding cells)``.
    """
    values = values.reshape(-1)
    pos = torch.nonzero(values >= t_pos).flatten()
    pos = pos[torch.argsort(values[pos], descending=True, stable=True)]
    neg = torch.nonzero((values >= 0) & (values <= t_neg)).flatten()
    neg = neg[torch.argsort(values[neg], stable=True)]
    neutral = torch.nonzero((values > t_neg) & (values < t_pos)).flatten()
    indices = torch.cat([pos, neg, neutral])[:num_points]
    labels = torch.cat(
        [
            torch.ones(len(pos), dtype=torch.int64),
            torch.zeros(len(neg), dtype=torch.int64),
            torch.full((len(neutral),), -1, dtype=torch.int64),
        ]
    )[:num_points]
    return indices, labels


def refine_points(full_map: torch.Tensor, points: np.ndarray, radius: int = 10) -> np.ndarray:
    """Discrete to continuous (step 6): softmax-weighted mean of the pixel indices near each point.

    Args:
        full_map: ``(H, W)`` similarity on the image, in [0, 1].
        points: ``(P, 2)`` integer pixel indices ``(x, y)``.
        radius: half-size of the square window summed over (10 reproduces the whole-image sum).

    Returns:
        ``(P, 2)`` float64 continuous coordinates in pixel-index units (pixel ``i`` at ``i``).
    """
    sim = full_map.detach().to("cpu", torch.float64).numpy()
    height, width = sim.shape
    out = np.zeros((len(points), 2), dtype=np.float64)
    for n, (px, py) in enumerate(np.asarray(points, dtype=np.int64).reshape(-1, 2)):
        x_lo, x_hi = max(px - radius, 0), min(px + radius + 1, width)
        y_lo, y_hi = max(py - radius, 0), min(py + radius + 1, height)
        xs = np.arange(x_lo, x_hi, dtype=np.float64)
        ys = np.arange(y_lo, y_hi, dtype=np.float64)
        log_w = sim[y_lo:y_hi, x_lo:x_hi] - ((xs[None, :] - px) ** 2 + (ys[:, None] - py) ** 2)
        weights = np.exp(log_w - log_w.max())
        weights /= weights.sum()
        out[n] = (weights.sum(0) @ xs, weights.sum(1) @ ys)
    return out


@POINT_SELECTORS.register()
class SasPSelector:
    """READ's similarity-as-points selector (see the module docstring for every step).

    Args:
        num_points: points kept (READ-7B: 30; READ-13B: 60).
        t_pos: positive threshold (READ-7B: 0.8; READ-13B: 0.6).
        t_neg: negative threshold (0.2).
        down_sample: grid down-sampling factor before thresholding (READ-7B: 2; READ-13B: 1).
        refine: move each point to the softmax-weighted mean of nearby pixels (discrete to
            continuous); ``False`` keeps the centre of the selected pixel.
        refine_radius: window half-size of the refinement in pixels.
    """

    def __init__(
        self,
        num_points: int = 30,
        t_pos: float = 0.8,
        t_neg: float = 0.2,
        down_sample: int = 2,
        refine: bool = True,
        refine_radius: int = 10,
    ) -> None:
        if not 0.0 <= t_neg < t_pos <= 1.0:
            raise ConfigError(
                f"SasP needs 0 <= t_neg < t_pos <= 1, got t_neg={t_neg}, t_pos={t_pos}."
            )
        if int(num_points) < 1 or int(down_sample) < 1 or int(refine_radius) < 0:
            raise ConfigError(
                "num_points and down_sample must be at least 1 and refine_radius at least 0, got "
                f"{num_points}, {down_sample}, {refine_radius}."
            )
        self.num_points = int(num_points)
        self.t_pos = float(t_pos)
        self.t_neg = float(t_neg)
        self.down_sample = int(down_sample)
        self.refine = bool(refine)
        self.refine_radius = int(refine_radius)

    def padded_grid(self, similarity: torch.Tensor, placement: GridPlacement) -> torch.Tensor:
        """Steps 2-3: the down-sampled, normalised grid padded with -1 to span the image."""
        grid_h, grid_w = similarity.shape
        small_h, small_w = grid_h // self.down_sample, grid_w // self.down_sample
        if small_h < 1 or small_w < 1:
            raise ConfigError(
                f"A {grid_h}x{grid_w} similarity grid is too small for down_sample="
                f"{self.down_sample}; lower down_sample or use a larger input."
            )
        small = F.interpolate(
            similarity.float()[None, None],
            size=(small_h, small_w),
            mode="bilinear",
            align_corners=False,
        )[0, 0]
        small = min_max_normalize(small)
        top, bottom, left, right = placement.padding_cells(small_h, small_w)
        return F.pad(small, (left, right, top, bottom), mode="constant", value=PAD_VALUE)

    def __call__(
        self, similarity: torch.Tensor | np.ndarray, placement: GridPlacement
    ) -> PointPrompts:
        """Points for SAM from a patch-grid similarity map.

        Args:
            similarity: ``(h, w)`` raw query-to-token similarity on the patch grid (any scale;
                it is min-max normalised here).
            placement: where the grid lies on the input image.

        Returns:
            :class:`PointPrompts`: ``(P, 2)`` ``(x, y)`` input-image pixels (centres at
            ``i + 0.5``) and labels 1 / 0 / -1 in the order positives, negatives, neutral.
        """
        similarity = torch.as_tensor(similarity).detach().float().cpu()
        if similarity.ndim != 2:
            raise ConfigError(f"similarity must be (h, w), got shape {tuple(similarity.shape)}.")
        height, width = placement.image_size
        padded = self.padded_grid(similarity, placement)
        padded_h, padded_w = padded.shape
        indices, labels = order_cells(padded, self.num_points, self.t_pos, self.t_neg)
        rows, cols = (indices // padded_w).numpy(), (indices % padded_w).numpy()
        px = np.floor(np.minimum((cols + 0.5) * (width / padded_w), width - 1))
        py = np.floor(np.minimum((rows + 0.5) * (height / padded_h), height - 1))
        pixels = np.stack([px, py], axis=1).astype(np.int64)
        if self.refine and len(pixels):
            full = placement.to_image(min_max_normalize(similarity))
            coords = refine_points(full, pixels, self.refine_radius)
        else:
            coords = pixels.astype(np.float64)
        return PointPrompts(coords + 0.5, labels.numpy())

    select = __call__
