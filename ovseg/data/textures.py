"""Procedural stuff textures (grass, sand, water, wall) for the synthetic world.

Every renderer takes a ``numpy.random.Generator`` and an output size and returns an
``(H, W, 3)`` float32 RGB array in the 0..255 range (not yet clipped or quantised). All work is
vectorised numpy; a 128x128 texture takes well under a millisecond or two.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise: a ``cells x cells`` normal grid upsampled bilinearly to (H, W).

    Returns float32 (H, W) with roughly unit standard deviation.
    """
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    up = Image.fromarray(grid, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(up, dtype=np.float32)


def _box_blur_rows(a: np.ndarray, length: int) -> np.ndarray:
    """Mean over a vertical window of ``length`` rows (same size output, edge-padded)."""
    pad = np.pad(a, ((length // 2, length - 1 - length // 2), (0, 0)), mode="edge")
    c = np.cumsum(pad, axis=0, dtype=np.float32)
    c = np.concatenate([np.zeros((1, a.shape[1]), np.float32), c], axis=0)
    return (c[length:] - c[:-length]) / length


def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> np.ndarray:
    return np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32)


def grass(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Green blades: vertical streaks of light/dark green with yellowish tips and patches."""
    base = _jitter(rng, (78, 138, 52), 10)
    length = int(rng.integers(4, 8))
    noise = rng.standard_normal((height, width)).astype(np.float32)
    streaks = _box_blur_rows(noise, length) * np.sqrt(length)
    patches = smooth_noise(rng, height, width, 6)
    shade = 1.0 + 0.22 * streaks + 0.10 * patches
    img = base[None, None, :] * shade[..., None]
    tips = np.clip(streaks - 1.2, 0, None)[..., None] * np.array([30, 25, -5], np.float32)
    return img + tips


def sand(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Beige sand: fine grey speckle, sparse dark grains and faint wind ripples."""
    base = _jitter(rng, (212, 188, 140), 10)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(8, 14)
    phase = rng.uniform(0, 2 * np.pi)
    ripples = np.sin(2 * np.pi * (y + 3 * np.sin(x / 9 + phase)) / period)
    speckle = rng.standard_normal((height, width)).astype(np.float32)
    grains = rng.random((height, width)) < 0.04
    shade = 1.0 + 0.05 * smooth_noise(rng, height, width, 5) + 0.025 * ripples
    img = base[None, None, :] * shade[..., None] + 9.0 * speckle[..., None]
    img[grains] *= 0.72
    return img


def water(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Blue water: horizontal wavy bands with pale highlights on the crests."""
    base = _jitter(rng, (45, 105, 172), 10)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    wavelength = rng.uniform(7, 12)
    across = rng.uniform(18, 40)
    phase = rng.uniform(0, 2 * np.pi, 2)
    bands = np.sin(2 * np.pi * (y / wavelength + 0.2 * np.sin(2 * np.pi * x / across + phase[0])))
    bands = bands + 0.3 * np.sin(2 * np.pi * (x / across * 0.5 + y / 23) + phase[1])
    shade = 1.0 + 0.10 * bands + 0.07 * smooth_noise(rng, height, width, 4)
    img = base[None, None, :] * shade[..., None]
    crest = np.clip(bands - 0.85, 0, None)[..., None] * np.array([110, 110, 80], np.float32)
    noise = 4.0 * rng.standard_normal((height, width, 1)).astype(np.float32)
    return img + crest + noise


def wall(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Brick wall (grey stone or red brick) with light mortar joints in a running bond."""
    red_brick = rng.random() < 0.5
    brick_rgb = (158, 78, 62) if red_brick else (132, 132, 136)
    base = _jitter(rng, brick_rgb, 10)
    mortar = _jitter(rng, (198, 194, 184), 8)
    brick_h = int(rng.integers(7, 11))
    brick_w = int(rng.integers(15, 23))
    joint = int(rng.integers(1, 3))
    oy, ox = rng.integers(0, brick_h), rng.integers(0, brick_w)
    y, x = np.mgrid[0:height, 0:width]
    row = (y + oy) // brick_h
    xs = x + ox + (row % 2) * (brick_w // 2)
    col = xs // brick_w
    is_mortar = ((y + oy) % brick_h < joint) | (xs % brick_w < joint)
    # one brightness per brick, looked up from a small random table by brick id
    table = rng.uniform(0.85, 1.12, (64, 64)).astype(np.float32)
    brick_shade = table[row % 64, col % 64]
    img = base[None, None, :] * brick_shade[..., None]
    img[is_mortar] = mortar
    noise = 6.0 * rng.standard_normal((height, width, 1)).astype(np.float32)
    return img + noise


TEXTURES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "grass": grass,
    "sand": sand,
    "water": water,
    "wall": wall,
}
"""Stuff class name -> renderer ``(rng, height, width) -> (H, W, 3) float32``."""


def render_texture(name: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Render stuff texture ``name`` as (H, W, 3) float32 RGB in 0..255 (unclipped)."""
    try:
        fn = TEXTURES[name]
    except KeyError:
        raise ValueError(f"Unknown stuff texture {name!r}; known: {', '.join(TEXTURES)}.") from None
    return np.asarray(fn(rng, height, width), dtype=np.float32)
