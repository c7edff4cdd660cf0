"""Mask pooling of dense tokens, by hand."""

from __future__ import annotations

import numpy as np
import torch

from ovseg.models.classifiers import (
    MaskContext,
    MaskPoolingClassifier,
    mask_area_weights,
    pool_tokens,
)
from ovseg.registry import MASK_CLASSIFIERS


def test_registered():
    assert MASK_CLASSIFIERS.get("MaskPoolingClassifier") is MaskPoolingClassifier


def test_area_weights_by_hand():
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 0, 0] = mask[0, 0, 1] = mask[0, 1, 0] = True  # 3 of the 4 pixels of cell (0, 0)
    mask[0, 3, 3] = True  # 1 of 4 of cell (1, 1)
    np.testing.assert_allclose(mask_area_weights(mask, (2, 2)), [[[0.75, 0.0], [0.0, 0.25]]])
    # 3 rows onto 2 cells: cell 0 covers rows [0, 2), cell 1 rows [1, 3)
    column = np.array([[[True], [False], [False]]])
    np.testing.assert_allclose(mask_area_weights(column, (2, 1)), [[[0.5], [0.0]]])


def test_pooling_by_hand():
    # tokens (D=2, h=2, w=2): cell (0,0) = (1, 0), cell (1,1) = (0, 1), others (1, 1)/sqrt2
    s = 2**-0.5
    tokens = torch.tensor([[[1.0, s], [s, 0.0]], [[0.0, s], [s, 1.0]]])
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, :2, :2] = True  # all of cell (0, 0)
    mask[0, 2:, 2:3] = True  # half of cell (1, 1)
    # weighted mean = (1 * (1, 0) + 0.5 * (0, 1)) / 1.5 -> direction (2, 1) / sqrt(5)
    expected = np.array([[2.0, 1.0]]) / np.sqrt(5)
    weights = mask_area_weights(mask, (2, 2))
    np.testing.assert_allclose(pool_tokens(tokens, weights), expected, rtol=1e-6)
    context = MaskContext(image=np.zeros((4, 4, 3), np.uint8), tokens=tokens, backbone=None)
    np.testing.assert_allclose(MaskPoolingClassifier().embed(mask, context), expected, rtol=1e-6)


def test_empty_mask_pools_to_zero():
    tokens = torch.randn(3, 2, 2)
    out = pool_tokens(tokens, torch.zeros(1, 2, 2))
    np.testing.assert_array_equal(out, np.zeros((1, 3)))
