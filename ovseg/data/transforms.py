"""Per-sample training / test transforms for semantic segmentation, with mmsegmentation semantics.

Samples are dicts ``{"image": (H, W, 3) uint8 RGB, "label": (H, W) int64 class indices (255 =
ignore), ...}``. Every transform takes such a dict and returns it with ``image`` / ``label``
replaced; other keys pass through. :class:`Normalize` turns the image into ``(H, W, 3) float32``
and :class:`ToTensor` into a ``(3, H, W) float32`` tensor and a ``(H, W) int64`` tensor.

Randomness comes from ``numpy.random`` (the global generator), as in mmsegmentation; the training
engine seeds it per sample (:class:`ovseg.engine.data.SeededDataset`), so a run is reproducible.

A training pipeline as the DenseCLIP / mmseg ADE20K recipes write it::

    Compose(transforms=[
        {"type": "RandomResize", "scale": [2048, 512], "ratio_range": [0.5, 2.0]},
        {"type": "RandomCrop", "crop_size": 512, "cat_max_ratio": 0.75},
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "PhotoMetricDistortion"},
        {"type": "Normalize", "mean": MEAN_255, "std": STD_255},
        {"type": "Pad", "size": 512},
        {"type": "ToTensor"},
    ])

Resizing follows mmcv: a keep-ratio ``scale=(long, short)`` resizes by
``min(long / max(h, w), short / min(h, w))`` and rounds each side with ``int(x + 0.5)``; images
are resampled bilinearly (``align_corners=False``, no antialiasing, OpenCV ``INTER_LINEAR``'s
sampling) and rounded to uint8, labels with nearest neighbour (OpenCV ``INTER_NEAREST``:
source index ``floor(dst * src / dst_size)``). Colour-space steps use OpenCV's 8-bit HSV
conversion (:func:`rgb_to_hsv_u8`, :func:`hsv_to_rgb_u8`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.inference.resize import rescale_size
from ovseg.registry import DATASETS, TRANSFORMS

IGNORE_INDEX = 255
Sample = dict[str, Any]

__all__ = [
    "Compose",
    "Normalize",
    "Pad",
    "PhotoMetricDistortion",
    "RandomCrop",
    "RandomFlip",
    "RandomResize",
    "RemapLabels",
    "Resize",
    "ToTensor",
    "TransformedDataset",
    "build_transforms",
    "hsv_to_rgb_u8",
    "resize_image",
    "resize_label",
    "rgb_to_hsv_u8",
]


# ----------------------------------------------------------------------------- helpers
def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    values = tuple(int(v) for v in value)
    if len(values) != 2:
        raise ConfigError(f"{what} must be an int or two ints, got {value!r}.")
    return values  # type: ignore[return-value]


def _image(sample: Mapping[str, Any]) -> np.ndarray:
    image = sample.get("image")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(
            "Transforms expect sample['image'] as an (H, W, 3) numpy array; put ToTensor last."
        )
    return image


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 (or float32) -> ``size=(h, w)``, bilinear, same dtype.

    uint8 results are rounded to the nearest integer and clipped to [0, 255].
    """
    if image.shape[:2] == tuple(size):
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    out = F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False)[0]
    out = out.permute(1, 2, 0).numpy()
    if image.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(image.dtype, copy=False)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` integer label map -> ``size=(h, w)`` with nearest neighbour (same dtype)."""
    if label.shape[:2] == tuple(size):
        return label
    tensor = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
    out = F.interpolate(tensor[None, None].double(), size=size, mode="nearest")[0, 0]
    return out.long().numpy().astype(label.dtype, copy=False)


def rgb_to_hsv_u8(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> uint8 HSV with OpenCV's 8-bit formulas (H in [0, 180)).

    OpenCV's fixed-point arithmetic (12 fractional bits, ``cvRound`` tables):
    ``V = max``, ``S = round(diff * round(255 * 4096 / V) / 4096)`` and
    ``H = round(h' * round(180 * 4096 / (6 * diff)) / 4096)`` with ``h'`` the usual sector
    offset (``g - b``, ``b - r + 2 diff``, ``r - g + 4 diff`` for max in R, G, B), plus 180
    when negative.
    """
    rgb = image.astype(np.int64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    diff = v - rgb.min(axis=-1)
    shift = 12
    half = 1 << (shift - 1)
    idx = np.arange(256, dtype=np.float64)
    with np.errstate(divide="ignore"):
        sdiv = np.where(idx > 0, np.rint((255 << shift) / idx), 0).astype(np.int64)
        hdiv = np.where(idx > 0, np.rint((180 << shift) / (6.0 * idx)), 0).astype(np.int64)
    s = (diff * sdiv[v] + half) >> shift
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hdiv[diff] + half) >> shift
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], axis=-1).astype(np.uint8)


_SECTORS = np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])
"""Per hue sector, which of (v, p, q, t) gives R, G, B (OpenCV's sector table, RGB order)."""


def hsv_to_rgb_u8(hsv: np.ndarray) -> np.ndarray:
    """uint8 HSV (H in [0, 180)) -> ``(H, W, 3)`` uint8 RGB as OpenCV's vectorised 8-bit path.

    In float32: ``h = H * (6 / 180)``, sector ``trunc(h) mod 6``, ``f = h - trunc(h)``,
    ``p = v (1 - s)``, ``q = v (1 - s f)``, ``t = v (1 - s (1 - f))`` with ``s, v`` scaled by
    ``1 / 255``; each channel is ``255 x`` truncated to an integer. (OpenCV's scalar tail,
    used for the last few pixels of a row, rounds instead; the SIMD body truncates.)
    """
    scale = np.float32(1.0 / 255.0)
    h = hsv[..., 0].astype(np.float32) * np.float32(6.0 / 180.0)
    s = hsv[..., 1].astype(np.float32) * scale
    v = hsv[..., 2].astype(np.float32) * scale
    whole = np.trunc(h)
    frac = h - whole
    one = np.float32(1.0)
    tab = np.stack([v, v * (one - s), v * (one - s * frac), v * (one - s * (one - frac))], -1)
    sector = whole.astype(np.int64) % 6
    rgb = np.take_along_axis(tab, _SECTORS[sector], axis=-1)
    return np.clip(np.trunc(rgb * np.float32(255.0)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- composition
@TRANSFORMS.register()
class Compose:
    """Apply ``transforms`` in order; each item is a callable or a ``{type: ...}`` mapping."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample] | Mapping[str, Any]]):
        self.transforms = [build_transforms(t) for t in transforms]

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __repr__(self) -> str:
        inner = ", ".join(type(t).__name__ for t in self.transforms)
        return f"Compose([{inner}])"


def build_transforms(
    spec: Callable[[Sample], Sample] | Mapping[str, Any] | Sequence[Any],
) -> Callable[[Sample], Sample]:
    """A callable from a transform, a ``{type: ...}`` mapping, or a list of them (a Compose)."""
    if callable(spec) and not isinstance(spec, Mapping):
        return spec
    if isinstance(spec, Mapping):
        return TRANSFORMS.build(spec)
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        return Compose(list(spec))
    raise ConfigError(
        f"A transform must be a {{type: ...}} mapping or a list of them, not {spec!r}."
    )


# ----------------------------------------------------------------------------- geometry
@TRANSFORMS.register()
class Resize:
    """Resize image (bilinear) and label (nearest) to a fixed scale.

    Args:
        scale: ``(long, short)`` bound with ``keep_ratio`` (mmseg's ``img_scale=(2048, 512)``
            means: short side 512 unless the long side would exceed 2048), else the exact
            output ``(w, h)`` as mmcv's ``imresize`` takes it.
        keep_ratio: keep the aspect ratio (the test-time resize of the recipes).
    """

    def __init__(self, scale: int | Sequence[int], keep_ratio: bool = True) -> None:
        self.scale = _pair(scale, "Resize.scale")
        self.keep_ratio = bool(keep_ratio)

    def target_size(self, height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
        """Output ``(h, w)`` for an ``height`` x ``width`` input at ``scale``."""
        if self.keep_ratio:
            return rescale_size(height, width, min(scale), max(scale))
        return scale[1], scale[0]

    def _apply(self, sample: Sample, scale: tuple[int, int]) -> Sample:
        image = _image(sample)
        size = self.target_size(image.shape[0], image.shape[1], scale)
        sample = dict(sample)
        sample["image"] = resize_image(image, size)
        if sample.get("label") is not None:
            sample["label"] = resize_label(np.asarray(sample["label"]), size)
        return sample

    def __call__(self, sample: Sample) -> Sample:
        return self._apply(sample, self.scale)


@TRANSFORMS.register()
class RandomResize(Resize):
    """mmseg's ``Resize(img_scale, ratio_range)``: ``scale`` times a ratio drawn uniformly.

    The ratio is ``U[ratio_range)`` (``np.random.random_sample``); the scale becomes
    ``(int(long * ratio), int(short * ratio))`` and the keep-ratio rule of :class:`Resize`
    applies.
    """

    def __init__(
        self,
        scale: int | Sequence[int],
        ratio_range: Sequence[float] = (0.5, 2.0),
        keep_ratio: bool = True,
    ) -> None:
        super().__init__(scale, keep_ratio)
        low, high = (float(r) for r in ratio_range)
        if not 0 < low <= high:
            raise ConfigError(f"ratio_range must satisfy 0 < min <= max, got {ratio_range!r}.")
        self.ratio_range = (low, high)

    def sample_scale(self) -> tuple[int, int]:
        low, high = self.ratio_range
        ratio = np.random.random_sample() * (high - low) + low
        return int(self.scale[0] * ratio), int(self.scale[1] * ratio)

    def __call__(self, sample: Sample) -> Sample:
        return self._apply(sample, self.sample_scale())


@TRANSFORMS.register()
class RandomCrop:
    """Random crop of ``crop_size``; with ``cat_max_ratio < 1`` no class may dominate the crop.

    As mmseg's ``RandomCrop``: a crop is drawn (offsets ``randint(0, margin + 1)``); while it
    does not hold at least two classes (ignoring ``ignore_index``) with the largest one under
    ``cat_max_ratio`` of the labelled pixels, a new crop is drawn, at most 10 times; the last
    draw is kept either way. Inputs smaller than the crop keep their size along that axis (pad
    afterwards with :class:`Pad`).

    Args:
        crop_size: ``(h, w)`` or one int.
        cat_max_ratio: largest allowed share of one class (1 disables the check).
        ignore_index: label value left out of the class counts.
    """

    max_retries = 10

    def __init__(
        self,
        crop_size: int | Sequence[int],
        cat_max_ratio: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.crop_size = _pair(crop_size, "RandomCrop.crop_size")
        if min(self.crop_size) <= 0:
            raise ConfigError(f"crop_size must be positive, got {crop_size!r}.")
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = int(ignore_index)

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """A random ``(y1, y2, x1, x2)``."""
        margin_h = max(height - self.crop_size[0], 0)
        margin_w = max(width - self.crop_size[1], 0)
        y1 = np.random.randint(0, margin_h + 1)
        x1 = np.random.randint(0, margin_w + 1)
        return y1, y1 + self.crop_size[0], x1, x1 + self.crop_size[1]

    def balanced(self, label: np.ndarray) -> bool:
        """True when ``label`` holds >= 2 classes and none above ``cat_max_ratio``."""
        values, counts = np.unique(label, return_counts=True)
        counts = counts[values != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def __call__(self, sample: Sample) -> Sample:
        image = _image(sample)
        label = sample.get("label")
        box = self.crop_box(*image.shape[:2])
        if self.cat_max_ratio < 1.0 and label is not None:
            for _ in range(self.max_retries):
                y1, y2, x1, x2 = box
                if self.balanced(np.asarray(label)[y1:y2, x1:x2]):
                    break
                box = self.crop_box(*image.shape[:2])
        y1, y2, x1, x2 = box
        sample = dict(sample)
        sample["image"] = image[y1:y2, x1:x2]
        if label is not None:
            sample["label"] = np.asarray(label)[y1:y2, x1:x2]
        return sample


@TRANSFORMS.register()
class RandomFlip:
    """Flip image and label together with probability ``prob`` (``horizontal`` / ``vertical``)."""

    def __init__(self, prob: float = 0.5, direction: str = "horizontal") -> None:
        if not 0.0 <= float(prob) <= 1.0:
            raise ConfigError(f"RandomFlip.prob must lie in [0, 1], got {prob}.")
        if direction not in ("horizontal", "vertical"):
            raise ConfigError(f"direction must be 'horizontal' or 'vertical', not {direction!r}.")
        self.prob = float(prob)
        self.axis = 1 if direction == "horizontal" else 0

    def __call__(self, sample: Sample) -> Sample:
        if not np.random.rand() < self.prob:
            return sample
        sample = dict(sample)
        sample["image"] = np.flip(_image(sample), axis=self.axis).copy()
        if sample.get("label") is not None:
            sample["label"] = np.flip(np.asarray(sample["label"]), axis=self.axis).copy()
        return sample


@TRANSFORMS.register()
class Pad:
    """Pad bottom/right to ``size`` (``(h, w)`` or one int): image with ``pad_val``, label with
    ``seg_pad_val`` (255 = ignore). Larger inputs are left as they are."""

    def __init__(
        self, size: int | Sequence[int], pad_val: float = 0, seg_pad_val: int = IGNORE_INDEX
    ) -> None:
        self.size = _pair(size, "Pad.size")
        self.pad_val = pad_val
        self.seg_pad_val = int(seg_pad_val)

    def __call__(self, sample: Sample) -> Sample:
        image = _image(sample)
        pad_h = max(self.size[0] - image.shape[0], 0)
        pad_w = max(self.size[1] - image.shape[1], 0)
        if not pad_h and not pad_w:
            return sample
        sample = dict(sample)
        sample["image"] = np.pad(
            image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=self.pad_val
        )
        if sample.get("label") is not None:
            sample["label"] = np.pad(
                np.asarray(sample["label"]),
                ((0, pad_h), (0, pad_w)),
                constant_values=self.seg_pad_val,
            )
        return sample


# ----------------------------------------------------------------------------- photometric
@TRANSFORMS.register()
class PhotoMetricDistortion:
    """mmseg's photometric distortion of a uint8 RGB image; each step happens with probability 1/2.

    Order (as mmseg's code runs it): brightness (add ``U(-delta, delta)``); then, with ``mode =
    randint(2)``, contrast (multiply by ``U(contrast_range)``) here if ``mode == 1``; saturation
    (HSV S times ``U(saturation_range)``); hue (HSV H plus ``randint(-hue_delta, hue_delta)``,
    mod 180); contrast here if ``mode == 0``. Each arithmetic step computes in float32, clips to
    [0, 255] and truncates to uint8. ``hue_delta=0`` / ranges ``[1, 1]`` switch a step off
    (colour-defined classes need that).
    """

    def __init__(
        self,
        brightness_delta: float = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        self.brightness_delta = float(brightness_delta)
        self.contrast_lower, self.contrast_upper = (float(v) for v in contrast_range)
        self.saturation_lower, self.saturation_upper = (float(v) for v in saturation_range)
        self.hue_delta = int(hue_delta)

    @staticmethod
    def convert(image: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        out = image.astype(np.float32) * np.float32(alpha) + np.float32(beta)
        return np.clip(out, 0, 255).astype(np.uint8)

    def brightness(self, image: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            delta = np.random.uniform(-self.brightness_delta, self.brightness_delta)
            return self.convert(image, beta=delta)
        return image

    def contrast(self, image: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            alpha = np.random.uniform(self.contrast_lower, self.contrast_upper)
            return self.convert(image, alpha=alpha)
        return image

    def saturation(self, image: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            hsv = rgb_to_hsv_u8(image)
            alpha = np.random.uniform(self.saturation_lower, self.saturation_upper)
            hsv[..., 1] = self.convert(hsv[..., 1], alpha=alpha)
            return hsv_to_rgb_u8(hsv)
        return image

    def hue(self, image: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            hsv = rgb_to_hsv_u8(image)
            shift = np.random.randint(-self.hue_delta, self.hue_delta) if self.hue_delta else 0
            hsv[..., 0] = (hsv[..., 0].astype(np.int64) + shift) % 180
            return hsv_to_rgb_u8(hsv)
        return image

    def __call__(self, sample: Sample) -> Sample:
        image = _image(sample)
        if image.dtype != np.uint8:
            raise ConfigError("PhotoMetricDistortion needs a uint8 image; put it before Normalize.")
        image = self.brightness(image)
        mode = np.random.randint(2)
        if mode == 1:
            image = self.contrast(image)
        image = self.saturation(image)
        image = self.hue(image)
        if mode == 0:
            image = self.contrast(image)
        sample = dict(sample)
        sample["image"] = image
        return sample


# ----------------------------------------------------------------------------- formatting
@TRANSFORMS.register()
class Normalize:
    """``(image - mean) / std`` per RGB channel, in the image's value range (0-255 for uint8).

    The output image is ``(H, W, 3) float32``. CLIP's statistics in 0-255 units are
    ``mean = 255 * (0.48145466, 0.4578275, 0.40821073)``, ``std = 255 * (0.26862954,
    0.26130258, 0.27577711)``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
        if (self.std <= 0).any():
            raise ConfigError(f"Normalize.std must be positive, got {std!r}.")

    def __call__(self, sample: Sample) -> Sample:
        sample = dict(sample)
        sample["image"] = (_image(sample).astype(np.float32) - self.mean) / self.std
        return sample


@TRANSFORMS.register()
class ToTensor:
    """``image`` -> ``(3, H, W) float32`` tensor (values unchanged); ``label`` -> ``(H, W) int64``."""

    def __call__(self, sample: Sample) -> Sample:
        sample = dict(sample)
        image = np.ascontiguousarray(_image(sample), dtype=np.float32)
        sample["image"] = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        if sample.get("label") is not None:
            sample["label"] = torch.from_numpy(
                np.ascontiguousarray(sample["label"], dtype=np.int64)
            )
        return sample


@TRANSFORMS.register()
class RemapLabels:
    """Map label values through ``mapping`` (``{old: new}``); unlisted values become ``ignore_index``.

    Used to train on a subset of a dataset's classes: the left-out classes' pixels are ignored.
    """

    def __init__(self, mapping: Mapping[int, int], ignore_index: int = IGNORE_INDEX) -> None:
        self.ignore_index = int(ignore_index)
        self.table = np.full(256, self.ignore_index, dtype=np.int64)
        for old, new in mapping.items():
            if not 0 <= int(old) < 256:
                raise ConfigError(f"RemapLabels maps label values in [0, 256), got {old!r}.")
            self.table[int(old)] = int(new)

    def __call__(self, sample: Sample) -> Sample:
        label = sample.get("label")
        if label is None:
            return sample
        label = np.asarray(label)
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ConfigError("RemapLabels expects label values in [0, 255].")
        sample = dict(sample)
        sample["label"] = self.table[label.astype(np.int64)]
        return sample


# ----------------------------------------------------------------------------- datasets
@DATASETS.register()
class TransformedDataset:
    """Any map-style dataset with a per-sample ``transform`` applied to its items.

    ``dataset`` is a dataset or its ``{type: ...}`` config; ``transform`` a callable, a
    ``{type: ...}`` mapping or a list of them (the training engine fills it with the task's
    ``data_transform``). Attributes such as ``class_names`` and ``unseen`` are those of the
    wrapped dataset.
    """

    def __init__(self, dataset: Any, transform: Any = None) -> None:
        if isinstance(dataset, Mapping):
            dataset = DATASETS.build(dataset)
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ConfigError(
                f"TransformedDataset needs a sized, indexable dataset, got {dataset!r}."
            )
        self.dataset = dataset
        self.transform = build_transforms(transform) if transform is not None else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        sample = self.dataset[index]
        return self.transform(sample) if self.transform is not None else sample

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)
