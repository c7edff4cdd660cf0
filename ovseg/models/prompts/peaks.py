"""Top-k similarity peaks with non-maximum suppression as point prompts."""

from __future__ import annotations

import numpy as np
import torch

from ovseg.errors import ConfigError
from ovseg.models.prompts.similarity import GridPlacement, min_max_normalize
from ovseg.registry import POINT_SELECTORS
from ovseg.structures import PointPrompts

__all__ = ["TopKPeakSelector", "greedy_peaks"]


def greedy_peaks(
    values: torch.Tensor,
    k: int,
    radius: float,
    *,
    threshold: float | None = None,
    descending: bool = True,
    taken: list[tuple[int, int]] | None = None,
) -> list[tuple[int, int]]:
    """Up to ``k`` cells ``(row, col)`` of ``values`` ``(h, w)``, best first, none within
    ``radius`` of another.

    Cells are visited from the highest value down (``descending=False``: the lowest up; ties in
    row-major order). A cell is taken unless its Euclidean distance (in cells) to a cell already
    taken, or to one of ``taken``, is ``<= radius``. Visiting stops at the first cell below
    ``threshold`` (above it when ascending).
    """
    height, width = values.shape
    flat = values.reshape(-1)
    order = torch.argsort(flat, descending=descending, stable=True).tolist()
    chosen: list[tuple[int, int]] = []
    blockers = list(taken or [])
    for index in order:
        if len(chosen) >= k:
            break
        value = float(flat[index])
        if threshold is not None and (value < threshold if descending else value > threshold):
            break
        row, col = divmod(index, width)
        if any((row - r) ** 2 + (col - c) ** 2 <= radius**2 for r, c in blockers):
            continue
        chosen.append((row, col))
        blockers.append((row, col))
    return chosen


@POINT_SELECTORS.register()
class TopKPeakSelector:
    """The ``k`` highest peaks of the min-max normalised similarity grid as positive points.

    Args:
        k: positive points at most.
        radius: suppression radius in grid cells (Euclidean, inclusive): a peak closer than this
            to a higher one is skipped.
        threshold: peaks below this normalised similarity are not taken.
        num_negative: negative points from the lowest minima (same suppression among them, and
            none within ``radius`` of a positive).
        negative_threshold: minima above this normalised similarity are not taken.

    Points sit at the centres of their grid cells on the input image (``(x, y)`` pixels,
    centres at ``i + 0.5``), positives first.
    """

    def __init__(
        self,
        k: int = 3,
        radius: float = 2.0,
        threshold: float = 0.5,
        num_negative: int = 0,
        negative_threshold: float = 0.2,
    ) -> None:
        if int(k) < 1 or int(num_negative) < 0 or float(radius) < 0:
            raise ConfigError(
                f"TopKPeakSelector needs k >= 1, num_negative >= 0, radius >= 0; got {k}, "
                f"{num_negative}, {radius}."
            )
        self.k = int(k)
        self.radius = float(radius)
        self.threshold = float(threshold)
        self.num_negative = int(num_negative)
        self.negative_threshold = float(negative_threshold)

    def __call__(
        self, similarity: torch.Tensor | np.ndarray, placement: GridPlacement
    ) -> PointPrompts:
        """Points from a ``(h, w)`` patch-grid similarity map placed on the image."""
        similarity = torch.as_tensor(similarity).detach().float().cpu()
        if similarity.ndim != 2:
            raise ConfigError(f"similarity must be (h, w), got shape {tuple(similarity.shape)}.")
        values = min_max_normalize(similarity)
        positives = greedy_peaks(values, self.k, self.radius, threshold=self.threshold)
        negatives = (
            greedy_peaks(
                values,
                self.num_negative,
                self.radius,
                threshold=self.negative_threshold,
                descending=False,
                taken=positives,
            )
            if self.num_negative
            else []
        )
        xs, ys = placement.cell_centers(*values.shape)
        cells = positives + negatives
        coords = np.array([[xs[c], ys[r]] for r, c in cells], dtype=np.float32).reshape(-1, 2)
        labels = np.array([1] * len(positives) + [0] * len(negatives), dtype=np.int64)
        return PointPrompts(coords, labels)

    select = __call__
