"""Comparisons of float results computed along different paths (shared test helper).

Two float32 computations of the same quantity that add in another order (another batch size,
another BLAS kernel, AVX-512 vs AVX2 vs SSE, 1 vs 2 threads) agree only up to rounding, and the
rounding error of a sum scales with the magnitude of its terms, not of its result. So:

- ``assert_close_to_scale`` bounds the error by a fraction of the reference's largest magnitude,
  which stays meaningful for entries that are sums cancelling to near zero;
- ``assert_argmax_matches`` / ``assert_threshold_matches`` compare discrete decisions only
  where the reference is further than ``margin`` from a tie or from the threshold, and accept
  either side inside it (a float tie may fall either way on another CPU).
"""

from __future__ import annotations

import numpy as np
import torch


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_close_to_scale(got, want, rtol: float, msg: str = "") -> None:
    """``|got - want| <= rtol * max|want|`` everywhere (shapes must match)."""
    got, want = _np(got).astype(np.float64), _np(want).astype(np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = float(np.abs(want).max()) if want.size else 0.0
    err = float(np.abs(got - want).max()) if want.size else 0.0
    assert err <= rtol * scale, f"{msg} max error {err:.3g} > {rtol:g} x scale {scale:.3g}"


def assert_argmax_matches(labels, scores, margin: float, axis: int = 0) -> None:
    """``labels`` is ``scores.argmax(axis)`` wherever the best score leads by more than ``margin``.

    Where several scores are within ``margin`` of the best, ``labels`` must name one of them.
    """
    labels, scores = _np(labels), np.moveaxis(_np(scores).astype(np.float64), axis, -1)
    best = scores.max(-1, keepdims=True)
    picked = np.take_along_axis(scores, labels[..., None].astype(np.int64), -1)
    assert (picked >= best - margin).all(), "a label is not within the margin of the best score"
    clear = (scores >= best - margin).sum(-1) == 1
    assert (labels[clear] == scores.argmax(-1)[clear]).all()


def assert_threshold_matches(mask, values, margin: float, threshold: float = 0.0) -> int:
    """``mask == values > threshold`` wherever ``|values - threshold| > margin``.

    Returns the number of entries inside the margin (where either side is accepted).
    """
    mask, values = _np(mask).astype(bool), _np(values).astype(np.float64)
    clear = np.abs(values - threshold) > margin
    assert (mask[clear] == (values[clear] > threshold)).all(), "a clear decision differs"
    return int((~clear).sum())
