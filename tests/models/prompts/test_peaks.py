"""Top-k peaks with non-maximum suppression."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.errors import ConfigError
from ovseg.models.prompts import GridPlacement, TopKPeakSelector
from ovseg.models.prompts.peaks import greedy_peaks
from ovseg.registry import POINT_SELECTORS

# peaks: 9 at (0, 0), 8 at (0, 1) (next to 9), 7 at (3, 3), 6 at (2, 4), 5 at (4, 0)
VALUES = torch.tensor(
    [
        [9.0, 8.0, 1.0, 1.0, 1.0],
        [1.0, 1.0, 1.0, 1.0, 1.0],
        [1.0, 1.0, 1.0, 1.0, 6.0],
        [1.0, 1.0, 1.0, 7.0, 1.0],
        [5.0, 1.0, 0.0, 1.0, 1.0],
    ]
)


def test_registered():
    assert POINT_SELECTORS.get("TopKPeakSelector") is TopKPeakSelector


def test_suppression_radius():
    # radius 1.5 suppresses (0, 1) next to (0, 0) and (2, 4) diagonal to (3, 3) (distance 1.41)
    assert greedy_peaks(VALUES, 3, 1.5) == [(0, 0), (3, 3), (4, 0)]
    # radius 1 keeps the diagonal neighbour, still drops the direct one
    assert greedy_peaks(VALUES, 3, 1.0) == [(0, 0), (3, 3), (2, 4)]
    # radius 0 suppresses nothing but the cell itself
    assert greedy_peaks(VALUES, 2, 0.0) == [(0, 0), (0, 1)]


def test_threshold_stops_early():
    assert greedy_peaks(VALUES, 5, 1.5, threshold=6.5) == [(0, 0), (3, 3)]


def test_selector_points_and_negatives():
    selector = TopKPeakSelector(k=2, radius=1.5, threshold=0.0, num_negative=1)
    points = selector(VALUES, GridPlacement.whole(10, 10))  # 2 px per cell
    # positives at cell centres (x = 2c + 1, y = 2r + 1). The minimum 0 at (4, 2) is diagonal
    # to the positive (3, 3), so the negative is the first of the next lowest (1) in row-major
    # order that is farther than 1.5 cells from both positives: (0, 2)
    np.testing.assert_allclose(points.coords, [[1, 1], [7, 7], [5, 1]])
    assert points.labels.tolist() == [1, 1, 0]


def test_negatives_keep_away_from_positives():
    values = torch.tensor([[1.0, 0.0, 0.5, 0.5, 0.1]])
    points = TopKPeakSelector(
        k=1, radius=1.0, threshold=0.0, num_negative=1, negative_threshold=0.5
    )(values, GridPlacement.whole(1, 5))
    # the minimum 0 at x = 1 is next to the positive at x = 0; the next minimum is 0.1 at 4
    np.testing.assert_allclose(points.coords, [[0.5, 0.5], [4.5, 0.5]])


def test_cells_of_a_crop_region():
    placement = GridPlacement.center_crop(4, 8)  # grid over x in [2, 6)
    points = TopKPeakSelector(k=1, threshold=0.0)(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), placement)
    np.testing.assert_allclose(points.coords, [[5.0, 1.0]])


def test_bad_settings():
    with pytest.raises(ConfigError):
        TopKPeakSelector(k=0)
