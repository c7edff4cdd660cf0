import pytest
import torch

from ovseg.inference.pamr import PAMR

OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _clamped(t, y, x):
    """t[..., y, x] with coordinates clamped to the border (replicate padding)."""
    h, w = t.shape[-2:]
    return t[..., min(max(y, 0), h - 1), min(max(x, 0), w - 1)]


def _pamr_loops(image, mask, num_iter, dilations):
    """Per-pixel loop version of the PAMR formula, written independently of the module."""
    _, channels, h, w = image.shape
    weights = torch.zeros(h, w, 8 * len(dilations))
    for y in range(h):
        for x in range(w):
            samples = torch.stack(
                [
                    _clamped(image[0], y + dy * d, x + dx * d)
                    for d in dilations
                    for dy, dx in [(0, 0)] + OFFSETS
                ]
            )  # (9 * nd, C)
            sigma = samples.std(dim=0)
            kappa = torch.stack(
                [
                    -(image[0, :, y, x] - _clamped(image[0], y + dy * d, x + dx * d)).abs()
                    / (1e-8 + 0.1 * sigma)
                    for d in dilations
                    for dy, dx in OFFSETS
                ]
            )  # (P, C)
            weights[y, x] = torch.softmax(kappa.mean(dim=1), dim=0)
    m = mask[0].clone()
    for _ in range(num_iter):
        new = torch.zeros_like(m)
        for y in range(h):
            for x in range(w):
                n = 0
                for d in dilations:
                    for dy, dx in OFFSETS:
                        new[:, y, x] += weights[y, x, n] * _clamped(m, y + dy * d, x + dx * d)
                        n += 1
        m = new
    return m.unsqueeze(0)


def test_shapes_dtype_and_mask_upsampling():
    pamr = PAMR(num_iter=2, dilations=(1, 2))
    image = torch.rand(2, 3, 12, 10)
    out = pamr(image, torch.rand(2, 5, 12, 10))
    assert out.shape == (2, 5, 12, 10)
    low = torch.rand(2, 5, 6, 5, dtype=torch.float64)
    out = pamr(image, low)
    assert out.shape == (2, 5, 12, 10)
    assert out.dtype == torch.float64
    with pytest.raises(ValueError):
        pamr(image, torch.rand(1, 5, 12, 10))


def test_constant_image_averages_the_eight_neighbours():
    # flat image: all weights equal (1/8); one step = mean of the 8 replicate-padded neighbours
    image = torch.full((1, 3, 3, 3), 0.5)
    mask = torch.zeros(1, 1, 3, 3)
    mask[0, 0, 1, 1] = 1.0
    out = PAMR(num_iter=1, dilations=(1,))(image, mask)
    expected = torch.full((3, 3), 1 / 8)
    expected[1, 1] = 0.0  # the pixel itself is not one of its neighbours
    assert torch.allclose(out[0, 0], expected)


def test_matches_per_pixel_formula():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 5, 6)
    mask = torch.rand(1, 2, 5, 6)
    out = PAMR(num_iter=3, dilations=(1, 2))(image, mask)
    ref = _pamr_loops(image, mask, num_iter=3, dilations=(1, 2))
    assert torch.allclose(out, ref, atol=1e-5)


def test_dilation_larger_than_image_is_allowed():
    out = PAMR(num_iter=2, dilations=(8, 16))(torch.rand(1, 3, 5, 7), torch.rand(1, 3, 5, 7))
    assert out.shape == (1, 3, 5, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("noise, min_accuracy", [(0.0, 0.99), (0.02, 0.9)])
def test_refinement_moves_a_noisy_mask_toward_the_image_regions(noise, min_accuracy):
    gen = torch.Generator().manual_seed(0)
    h, w = 24, 24
    region = torch.zeros(h, w, dtype=torch.long)
    region[:, w // 2 :] = 1
    image = torch.zeros(1, 3, h, w)
    image[:, :, :, w // 2 :] = 1.0
    image += noise * torch.randn(image.shape, generator=gen)
    truth = torch.nn.functional.one_hot(region, 2).permute(2, 0, 1).float()
    flip = torch.rand(h, w, generator=gen) < 0.3
    noisy_region = torch.where(flip, 1 - region, region)
    mask = torch.nn.functional.one_hot(noisy_region, 2).permute(2, 0, 1).float().unsqueeze(0)

    refined = PAMR(num_iter=10, dilations=(1, 2))(image, mask)

    acc_before = (mask[0].argmax(0) == region).float().mean()
    acc_after = (refined[0].argmax(0) == region).float().mean()
    assert acc_before < 0.75
    assert acc_after > min_accuracy
    # the image edge stops the propagation: across the boundary columns, the guided result
    # beats the same propagation with a flat (uninformative) image, which blurs across it
    blurred = PAMR(num_iter=10, dilations=(1, 2))(torch.zeros_like(image), mask)
    band = slice(w // 2 - 2, w // 2 + 2)
    guided_err = (refined[0] - truth)[:, :, band].abs().mean()
    blurred_err = (blurred[0] - truth)[:, :, band].abs().mean()
    assert guided_err < 0.8 * blurred_err
    # propagation is a convex combination: the class maps still sum to one
    assert torch.allclose(refined.sum(1), torch.ones(1, h, w), atol=1e-5)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        PAMR(num_iter=-1)
    with pytest.raises(ValueError):
        PAMR(dilations=())
    with pytest.raises(ValueError):
        PAMR(dilations=(0, 2))
