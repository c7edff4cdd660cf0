"""READ's similarity-as-points selector: hand-made maps and a transcription of the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.models.prompts import GridPlacement, SasPSelector
from ovseg.models.prompts.sasp import order_cells, refine_points
from ovseg.registry import POINT_SELECTORS

GRID = torch.tensor(
    [
        [0.0, 0.1, 0.5, 0.9],
        [0.2, 0.85, 0.3, 1.0],
        [0.6, 0.15, 0.8, 0.05],
        [0.4, 0.7, 0.25, 0.1],
    ]
)


def test_registered():
    assert POINT_SELECTORS.get("SasPSelector") is SasPSelector


def test_thresholds_ordering_and_truncation_by_hand():
    # positives (>= 0.8) highest first: 1.0@7, 0.9@3, 0.85@5, 0.8@10
    # negatives (<= 0.2) lowest first, ties row-major: 0@0, .05@11, .1@1, .1@15, .15@9, .2@4
    # neutral row-major: 2, 6, 8, 12, 13, 14; cut to 12 points
    selector = SasPSelector(num_points=12, down_sample=1, refine=False)
    points = selector(GRID, GridPlacement.whole(8, 8))
    order = [7, 3, 5, 10, 0, 11, 1, 15, 9, 4, 2, 6]
    np.testing.assert_array_equal(points.labels, [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, -1, -1])
    # each 2x2-pixel cell (r, c) -> pixel index floor((c + .5) * 2) = 2c + 1, centre at + 0.5
    expected = [[2 * (i % 4) + 1.5, 2 * (i // 4) + 1.5] for i in order]
    np.testing.assert_allclose(points.coords, expected)


def test_all_points_when_fewer_cells_than_num_points():
    points = SasPSelector(num_points=30, down_sample=1, refine=False)(
        GRID, GridPlacement.whole(4, 4)
    )
    assert len(points) == 16
    assert points.labels.tolist() == [1] * 4 + [0] * 6 + [-1] * 6


def test_min_max_before_thresholds():
    # the same map scaled and shifted gives the same points
    a = SasPSelector(num_points=16, down_sample=1, refine=False)(GRID, GridPlacement.whole(8, 8))
    b = SasPSelector(num_points=16, down_sample=1, refine=False)(
        GRID * 7 - 3, GridPlacement.whole(8, 8)
    )
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.coords, b.coords)


def test_down_sampling_and_padding_of_a_centre_crop_by_hand():
    # 8x16 image; the 4x4 grid covers the centred 8x8 square. Down-sampling by 2 (bilinear,
    # align_corners=False) averages 2x2 blocks: block means 1, 3 / 2, 5 -> normalised 0, .5 /
    # .25, 1. Cells are 4 px, so one cell of padding (-1) on the left and right: a 2x4 grid.
    grid = torch.tensor(
        [
            [0.0, 2.0, 3.0, 3.0],
            [1.0, 1.0, 3.0, 3.0],
            [2.0, 2.0, 6.0, 4.0],
            [2.0, 2.0, 5.0, 5.0],
        ]
    )
    selector = SasPSelector(num_points=30, down_sample=2, refine=False)
    placement = GridPlacement.center_crop(8, 16)
    padded = selector.padded_grid(grid, placement)
    np.testing.assert_allclose(padded, [[-1, 0, 0.5, -1], [-1, 0.25, 1, -1]])
    points = selector(grid, placement)
    # flat order: positive 6, negative 1, neutral 2, 5; padding cells never appear
    assert points.labels.tolist() == [1, 0, -1, -1]
    # cell (r, c) of the 2x4 padded grid -> pixel (floor((c + .5) * 4), floor((r + .5) * 4))
    np.testing.assert_allclose(points.coords, [[10.5, 6.5], [6.5, 2.5], [10.5, 2.5], [6.5, 6.5]])


def test_padding_cells_equal_read_formula():
    for height, width in [(480, 640), (640, 480), (333, 500), (375, 500), (12, 20), (427, 640)]:
        for side in (6, 12, 24):
            scale = side / min(height, width)
            pad_h = (int(height * scale) - side) // 2
            pad_w = (int(width * scale) - side) // 2
            placement = GridPlacement.center_crop(height, width)
            assert placement.padding_cells(side, side) == (pad_h, pad_h, pad_w, pad_w)


def test_pixel_index_is_clamped_inside_the_image():
    # 3 cells over 5 pixels: cell 2's centre 2.5 * 5 / 3 = 4.17 is clamped to W - 1 = 4
    points = SasPSelector(num_points=3, down_sample=1, refine=False)(
        torch.tensor([[0.0, 0.5, 1.0]]), GridPlacement.whole(1, 5)
    )
    np.testing.assert_allclose(points.coords[:, 0], [4.5, 0.5, 2.5])


def test_refinement_by_hand():
    # a 1x12 map, zero except 1 at x = 6; a point at x = 5 moves to the weighted mean of x with
    # weights exp(S(x) - (x - 5)^2)
    full = torch.zeros(1, 12)
    full[0, 6] = 1.0
    xs = np.arange(12.0)
    weights = np.exp(full[0].numpy().astype(np.float64) - (xs - 5) ** 2)
    expected_x = (weights * xs).sum() / weights.sum()
    out = refine_points(full, np.array([[5, 0]]))
    np.testing.assert_allclose(out, [[expected_x, 0.0]], rtol=1e-12)
    assert 5.0 < expected_x < 6.0
    # on a constant map, a point at the left border moves right by sum k e^-k^2 / sum e^-k^2
    ks = np.arange(11.0)
    shift = (ks * np.exp(-(ks**2))).sum() / np.exp(-(ks**2)).sum()
    out = refine_points(torch.full((30, 30), 0.3), np.array([[0, 15], [15, 15]]))
    np.testing.assert_allclose(out, [[shift, 15.0], [15.0, 15.0]], rtol=1e-12, atol=1e-12)


def test_order_cells_excludes_padding_and_cuts():
    values = torch.tensor([-1.0, 0.9, 0.1, 0.5, -1.0, 0.95, 0.0])
    indices, labels = order_cells(values, 4, 0.8, 0.2)
    assert indices.tolist() == [5, 1, 6, 2]
    assert labels.tolist() == [1, 1, 0, 0]


# ---------------------------------------------------------------------------------------------
# A straightforward transcription of READ's similarity_map_to_points (rui-qian/READ,
# model/READ.py), with the encoder's crop size ``target`` as a parameter (336 for LLaVA).
# ---------------------------------------------------------------------------------------------
def read_reference(sm: torch.Tensor, shape, target: int, num_points=30, t_pos=0.8, t_neg=0.2):
    side = int(sm.shape[0] ** 0.5)
    h, w = shape
    # get_similarity_map: min-max, to the crop size, zero padding, to the image size
    full = (sm - sm.min()) / (sm.max() - sm.min())
    full = F.interpolate(full.reshape(1, 1, side, side), (target, target), mode="bilinear")
    scale = target / min(h, w)
    new_h, new_w = int(h * scale), int(w * scale)
    pad_h, pad_w = (new_h - target) // 2, (new_w - target) // 2
    full = F.interpolate(F.pad(full, (pad_w, pad_w, pad_h, pad_h)), shape, mode="bilinear")[0, 0]
    # down-sample, normalise, pad with -1
    down = side // 2
    small = F.interpolate(sm.reshape(1, 1, side, side), (down, down), mode="bilinear")[0, 0]
    small = (small - small.min()) / (small.max() - small.min())
    scale = down / min(h, w)
    pad_h = (int(h * scale) - down) // 2
    pad_w = (int(w * scale) - down) // 2
    small = F.pad(small, (pad_w, pad_w, pad_h, pad_h), mode="constant", value=-1)
    gh, gw = small.shape
    flat = small.reshape(-1)
    pos = torch.nonzero(flat >= t_pos).flatten()
    pos = pos[torch.argsort(flat[pos], descending=True, stable=True)]
    neg = torch.nonzero((flat >= 0) & (flat <= t_neg)).flatten()
    neg = neg[torch.argsort(flat[neg], stable=True)]
    neutral = torch.nonzero((flat > t_neg) & (flat < t_pos)).flatten()
    chosen = torch.cat([pos, neg, neutral])[:num_points]
    labels = [1 if i in pos else 0 if i in neg else -1 for i in chosen.tolist()]
    points = []
    for idx in chosen.tolist():
        x = min((idx % gw + 0.5) * (w / gw), w - 1)
        y = min((idx // gw + 0.5) * (h / gh), h - 1)
        points.append([int(x), int(y)])
    # Discrete_to_Continuous: Gaussian weights times a whole-image softmax, float32
    probs = torch.softmax(full.reshape(-1), dim=0)
    grid_x, grid_y = torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy")
    grid_x, grid_y = grid_x.float().reshape(-1), grid_y.float().reshape(-1)
    out = []
    for x, y in points:
        weights = torch.exp(-((grid_x - x) ** 2 + (grid_y - y) ** 2)) * probs
        weights = weights / weights.sum()
        out.append([float((grid_x * weights).sum()), float((grid_y * weights).sum())])
    return np.array(out), np.array(labels)


@pytest.mark.parametrize(
    "shape, side, seed",
    [((24, 24), 12, 0), ((24, 40), 12, 1), ((36, 24), 12, 2), ((30, 30), 8, 3)],
)
def test_matches_read_reference(shape, side, seed):
    generator = torch.Generator().manual_seed(seed)
    sm = torch.randn(side * side, generator=generator)
    height, width = shape
    expected_coords, expected_labels = read_reference(sm, shape, target=min(height, width))
    points = SasPSelector()(sm.reshape(side, side), GridPlacement.center_crop(height, width))
    np.testing.assert_array_equal(points.labels, expected_labels)
    np.testing.assert_allclose(points.coords - 0.5, expected_coords, atol=2e-4)
    assert len(points) == min(30, (side // 2) ** 2)
    assert points.labels[0] == 1


def test_bad_settings_and_inputs():
    with pytest.raises(ConfigError):
        SasPSelector(t_pos=0.2, t_neg=0.5)
    with pytest.raises(ConfigError):
        SasPSelector(num_points=0)
    with pytest.raises(ConfigError, match="too small"):
        SasPSelector(down_sample=4)(torch.rand(2, 2), GridPlacement.whole(8, 8))
    with pytest.raises(ConfigError):
        SasPSelector()(torch.rand(2, 2, 2), GridPlacement.whole(8, 8))
