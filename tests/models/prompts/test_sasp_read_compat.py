"""``SasPSelector(compat="read")`` against a transcription of READ's ``similarity_map_to_points``.

The default (``compat="ovseg"``) fixes two float quirks of READ's code; ``compat="read"`` keeps
them. The sizes where READ's padding quirk occurs are found here by comparing READ's float
formula with exact integer arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.models.prompts import GridPlacement, SasPSelector
from ovseg.models.prompts.sasp import read_cell_pixels, read_center_padding

PATCHES = 24  # LLaVA's 336 px crop in 14 px patches; down-sampled by 2 to READ-7B's 12 x 12


# =============================================================================================
# REFERENCE TRANSCRIPTION, FOR COMPARISON ONLY (not used by ovseg).
# READ's similarity_map_to_points and the two helpers it calls (get_similarity_map,
# Discrete_to_Continuous) from rui-qian/READ, model/READ.py, operation for operation on torch
# tensors of the same dtypes, so float rounding happens where READ's happens. READ hard-codes
# num_points / t_pos / t_neg (7B: 30 / 0.8 / 0.2; 13B, commented out there: 60 / 0.6 / 0.2)
# and takes down_sample as an argument; all four are arguments here. Debug branches are left
# out. ``align_corners=False`` is written out where READ relies on it being the default.
# =============================================================================================
def _ref_get_similarity_map(sm, shape):
    sm = (sm - sm.min(1, keepdim=True)[0]) / (
        sm.max(1, keepdim=True)[0] - sm.min(1, keepdim=True)[0]
    )
    side = int(sm.shape[1] ** 0.5)
    sm = sm.reshape(sm.shape[0], side, side, -1).permute(0, 3, 1, 2)
    sm = sm.to(torch.float32)
    target_size = 336
    h, w = shape
    scale = target_size / min(h, w)
    new_h, new_w = int(h * scale), int(w * scale)
    sm = F.interpolate(sm, (target_size, target_size), mode="bilinear", align_corners=False)
    pad_h = (new_h - target_size) // 2
    pad_w = (new_w - target_size) // 2
    padded_sm = F.pad(sm, (pad_w, pad_w, pad_h, pad_h))
    sm = F.interpolate(padded_sm, shape, mode="bilinear", align_corners=False)
    return sm.permute(0, 2, 3, 1)


def _ref_discrete_to_continuous(sm, selected_points):
    h, w = sm.shape
    softmax_probs = F.softmax(sm.view(-1), dim=0)
    grid_x, grid_y = torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy")
    grid_x = grid_x.float().view(-1)
    grid_y = grid_y.float().view(-1)
    coords = []
    for x, y in zip(selected_points[:, 0], selected_points[:, 1]):
        distances = (grid_x - x) ** 2 + (grid_y - y) ** 2
        weight = torch.exp(-distances)
        final_weights = weight * softmax_probs
        final_weights = final_weights / final_weights.sum()
        coords.append(torch.stack([(grid_x * final_weights).sum(), (grid_y * final_weights).sum()]))
    return torch.stack(coords)


def read_similarity_map_to_points(
    sm, shape, down_sample=2, num_points=30, t_pos=0.8, t_neg=0.2, refine=True
):
    """READ's points ``(P, 2)`` (pixel-index units) and labels ``(P,)`` for a flat map ``(N,)``.

    ``refine=False`` returns the integer pixels READ computes just before its refinement.
    """
    origin_sm = _ref_get_similarity_map(sm[None, ..., None], shape)
    side = int(sm.shape[0] ** 0.5)
    sm = sm.reshape(1, 1, side, side)
    down_side = side // down_sample
    sm = sm.to(torch.float32)
    sm = F.interpolate(sm, (down_side, down_side), mode="bilinear", align_corners=False)[0, 0]
    sm = (sm - sm.min()) / (sm.max() - sm.min())
    target_size = down_side
    ori_h, ori_w = shape
    scale = target_size / min(ori_h, ori_w)
    new_h, new_w = int(ori_h * scale), int(ori_w * scale)
    pad_h = (new_h - target_size) // 2
    pad_w = (new_w - target_size) // 2
    sm = F.pad(sm, (pad_w, pad_w, pad_h, pad_h), mode="constant", value=-1)
    h, w = sm.shape
    scale_h = float(shape[0]) / h
    scale_w = float(shape[1]) / w
    sm = sm.reshape(-1)

    pos_indices = (sm >= t_pos).nonzero(as_tuple=False).squeeze()
    if pos_indices.dim() == 0:
        pos_indices = pos_indices.unsqueeze(0)
    sorted_pos = pos_indices[torch.argsort(sm[pos_indices], descending=True)]
    neg_indices = ((sm >= 0) & (sm <= t_neg)).nonzero(as_tuple=False).squeeze()
    if neg_indices.dim() == 0:
        neg_indices = neg_indices.unsqueeze(0)
    sorted_neg = neg_indices[torch.argsort(sm[neg_indices])]
    neutral = ((sm > t_neg) & (sm < t_pos)).nonzero(as_tuple=False).squeeze()
    if neutral.dim() == 0:
        neutral = neutral.unsqueeze(0)
    selected = torch.cat([sorted_pos, sorted_neg, neutral], dim=0)[:num_points]
    if selected.dim() == 0:
        selected = selected.unsqueeze(0)

    labels = torch.full((selected.numel(),), -1, dtype=torch.long)
    points = []
    bound_w = torch.tensor(shape[1] - 1).to(dtype=torch.float32)
    bound_h = torch.tensor(shape[0] - 1).to(dtype=torch.float32)
    for i, idx in enumerate(selected):
        x = min((idx % w + 0.5) * scale_w, bound_w)
        y = min((idx // w + 0.5) * scale_h, bound_h)
        points.append([int(x.item()), int(y.item())])
        if idx in pos_indices:
            labels[i] = 1
        if idx in neg_indices:
            labels[i] = 0
    points = torch.tensor(points)
    if not refine:
        return points.numpy(), labels.numpy()
    points = _ref_discrete_to_continuous(origin_sm[0, ..., 0], points)
    return points.numpy(), labels.numpy()


# =============================================================================================
# END OF REFERENCE TRANSCRIPTION
# =============================================================================================


def padding_quirk_sides(grid_side: int, low: int = 32, high: int = 2048) -> list[int]:
    """Short sides where READ's ``int(s * (g / s))`` (Python floats) is not ``g``, which the
    exact ``(s * g) // s`` always is."""
    return [s for s in range(low, high + 1) if int(s * (grid_side / s)) != (s * grid_side) // s]


QUIRK_SIDES = padding_quirk_sides(PATCHES // 2)
# ordinary sizes, a square one, two of the 336 crop's own quirk sides (79, 316: READ crops the
# full-resolution map by a pixel at both ends) and a short side of 200, where READ's float32
# cell centre (col + 0.5) * (200 / 12) drops a pixel for some rows
ORDINARY_SHAPES = [
    (480, 640),
    (640, 427),
    (333, 500),
    (336, 336),
    (79, 120),
    (316, 450),
    (200, 266),
]
# the whole-image float32 refinement costs O(H W) per point, twice (ovseg and the
# transcription), on a shared CPU: the refined comparisons use images of at most ~0.15 MP
REFINED_SHAPES = [(336, 336), (79, 120), (450, 316), (200, 266)]


def _shape_for(short: int, index: int) -> tuple[int, int]:
    # alternate landscape and portrait so both axes meet the quirk
    long = short + short // 3 + 1
    return (short, long) if index % 2 == 0 else (long, short)


def _random_map(seed: int) -> torch.Tensor:
    return torch.randn(PATCHES * PATCHES, generator=torch.Generator().manual_seed(seed))


def _assert_read_equal(points, ref_coords, ref_labels):
    np.testing.assert_array_equal(points.labels, ref_labels)
    # READ's coordinates plus ovseg's half pixel, stored as float32 by PointPrompts
    expected = (ref_coords.astype(np.float64) + 0.5).astype(np.float32)
    np.testing.assert_array_equal(points.coords, expected)


def test_padding_quirk_sides_found_by_exact_arithmetic():
    assert len(QUIRK_SIDES) == 84
    assert {94, 294, 307, 321, 346, 355, 365, 367, 376, 383, 535, 588} <= set(QUIRK_SIDES)
    # the quirk depends on the grid side only through its odd part: 6 and 24 give the same
    assert padding_quirk_sides(6) == QUIRK_SIDES == padding_quirk_sides(24)
    for side in QUIRK_SIDES:
        assert read_center_padding(side, side + 40, 12)[0] == -1
        assert GridPlacement.center_crop(side, side + 40).padding_cells(12, 12)[:2] == (0, 0)


@pytest.mark.parametrize("index, short", list(enumerate(QUIRK_SIDES)))
def test_read_compat_equals_reference_on_quirk_sizes(index, short):
    shape = _shape_for(short, index)
    sm = _random_map(short)
    placement = GridPlacement.center_crop(*shape)
    grid = sm.reshape(PATCHES, PATCHES)
    ref_pixels, ref_labels = read_similarity_map_to_points(sm, shape, refine=False)
    read = SasPSelector(compat="read", refine=False)(grid, placement)
    _assert_read_equal(read, ref_pixels, ref_labels)
    # READ crops a row or column of cells at both ends of the short side: 10 cells, not 12
    padded = SasPSelector(compat="read").padded_grid(grid, placement)
    assert min(padded.shape) == PATCHES // 2 - 2
    assert min(SasPSelector().padded_grid(grid, placement).shape) == PATCHES // 2
    # the default keeps all 12 cells and places the points elsewhere
    ovseg = SasPSelector(refine=False)(grid, placement)
    assert len(ovseg) != len(read) or np.abs(ovseg.coords - read.coords).max() >= 1.0


# refinement on the smaller quirk sizes, both orientations (every quirk size is compared
# without it above)
REFINED_QUIRK = [(i, QUIRK_SIDES[i]) for i in (0, 1, 2, 3, 5)]


@pytest.mark.parametrize("index, short", REFINED_QUIRK)
def test_read_compat_with_refinement_equals_reference_on_quirk_sizes(index, short):
    shape = _shape_for(short, index)
    sm = _random_map(short)
    placement = GridPlacement.center_crop(*shape)
    ref_coords, ref_labels = read_similarity_map_to_points(sm, shape)
    read = SasPSelector(compat="read")(sm.reshape(PATCHES, PATCHES), placement)
    _assert_read_equal(read, ref_coords, ref_labels)
    ovseg = SasPSelector()(sm.reshape(PATCHES, PATCHES), placement)
    assert len(ovseg) != len(read) or np.abs(ovseg.coords - read.coords).max() >= 1.0


@pytest.mark.parametrize(
    "shape, refine",
    [(shape, False) for shape in ORDINARY_SHAPES] + [(shape, True) for shape in REFINED_SHAPES],
)
def test_read_compat_equals_reference_on_ordinary_sizes(shape, refine):
    sm = _random_map(sum(shape))
    placement = GridPlacement.center_crop(*shape)
    ref_coords, ref_labels = read_similarity_map_to_points(sm, shape, refine=refine)
    points = SasPSelector(compat="read", refine=refine)(sm.reshape(PATCHES, PATCHES), placement)
    _assert_read_equal(points, ref_coords, ref_labels)


@pytest.mark.parametrize(
    "settings", [dict(down_sample=1, num_points=60, t_pos=0.6), dict(down_sample=3, t_neg=0.3)]
)
def test_read_compat_follows_the_settings(settings):
    shape = (147, 200)  # a quirk side for 24 cells as for 12
    sm = _random_map(7)
    ref_coords, ref_labels = read_similarity_map_to_points(sm, shape, **settings)
    points = SasPSelector(compat="read", **settings)(
        sm.reshape(PATCHES, PATCHES), GridPlacement.center_crop(*shape)
    )
    _assert_read_equal(points, ref_coords, ref_labels)


def test_read_cell_pixels_keep_the_float32_rounding():
    # (col + 0.5) * (W / 12) in float32 falls just below an integer for some columns and
    # widths (200, 400, 776, ...), where READ's pixel is one lower than the exact floor
    found = 0
    for width in range(32, 1025):
        cols = torch.arange(12)
        pixels = read_cell_pixels(cols, (1, 12), (1, width))[:, 0].numpy()
        exact = np.minimum(((2 * np.arange(12) + 1) * width) // 24, width - 1)
        assert np.all((pixels == exact) | (pixels == exact - 1))
        found += int(np.any(pixels != exact))
    assert found > 0


def test_default_is_ovseg_and_unchanged():
    selector = SasPSelector()
    assert selector.compat == "ovseg"
    sm = _random_map(3).reshape(PATCHES, PATCHES)
    placement = GridPlacement.center_crop(94, 126)
    a = selector(sm, placement)
    b = SasPSelector(compat="ovseg")(sm, placement)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_read_compat_on_a_whole_square_image():
    sm = _random_map(11)
    ref_coords, ref_labels = read_similarity_map_to_points(sm, (94, 94))
    points = SasPSelector(compat="read")(sm.reshape(PATCHES, PATCHES), GridPlacement.whole(94, 94))
    _assert_read_equal(points, ref_coords, ref_labels)


def test_read_compat_rejects_what_reads_code_cannot_do():
    with pytest.raises(ConfigError, match="compat"):
        SasPSelector(compat="READ-13B")
    selector = SasPSelector(compat="read")
    with pytest.raises(ConfigError, match="square"):
        selector(torch.rand(24, 32), GridPlacement.center_crop(240, 320))
    with pytest.raises(ConfigError, match="centred"):
        selector(torch.rand(24, 24), GridPlacement.whole(240, 320))
    with pytest.raises(ConfigError, match="centred"):
        selector(torch.rand(24, 24), GridPlacement((240, 320), (0, 0, 240, 240)))
    # one cell left after down-sampling, and READ's padding is -1 on this short side
    assert read_center_padding(49, 60, 1)[0] == -1
    with pytest.raises(ConfigError, match="crops the whole"):
        SasPSelector(compat="read", down_sample=2)(
            torch.rand(2, 2), GridPlacement.center_crop(49, 60)
        )
