"""Prompted-mask samples from a COCO instances dataset, for training and evaluating SAM.

A sample is one image with its instance masks and prompts sampled per instance, following
SAM's training recipe (Kirillov et al., 2023, appendix A):

* box: the ground-truth box with Gaussian noise on each coordinate, of standard deviation 10 %
  of the box side, clipped to 20 px;
* points: 1 to ``max_points`` foreground points drawn uniformly from the mask, plus (with
  probability ``negative_prob``) one background point from the box around the mask.

In ``mode="eval"`` every instance gets both the exact ground-truth box and one foreground point
at the mask pixel farthest from its boundary, so results do not depend on any random draw.

Coordinates are in input-image pixels, SAM's way: the point ``(x, y)`` is the pixel in column x,
row y (SAM adds 0.5 itself); boxes are XYXY pixel edges (COCO's ``[x, y, x + w, y + h]``).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from scipy import ndimage
from segment_anything.utils.transforms import ResizeLongestSide

from ovseg.errors import ConfigError, DatasetError, ImageReadError
from ovseg.io import read_image
from ovseg.registry import DATASETS

MODES = ("train", "eval")
BOX_NOISE_FRACTION = 0.1  # of the box side (SAM)
BOX_NOISE_MAX = 20.0  # pixels (SAM)


@dataclass
class Prompt:
    """One prompt for instance ``instance`` of a sample: a box, points, or both.

    ``box``: (4,) float XYXY; ``points``: (P, 2) float (x, y); ``labels``: (P,) int, 1
    foreground / 0 background.
    """

    instance: int
    box: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return "box" if self.box is not None else "point"

    @property
    def multimask(self) -> bool:
        """SAM's rule: only a lone point is ambiguous enough for three masks."""
        return self.box is None and self.points is not None and len(self.points) == 1


def mask_box(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (4,) float64 XYXY pixel edges of its pixels (the mask must not be empty)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def jitter_box(box: np.ndarray, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """SAM's noisy box: N(0, (0.1 * side)^2) per coordinate, clipped to 20 px, kept in the
    image and at least one pixel wide."""
    width, height = box[2] - box[0], box[3] - box[1]
    scale = np.array([width, height, width, height]) * BOX_NOISE_FRACTION
    noise = np.clip(rng.normal(0.0, 1.0, 4) * scale, -BOX_NOISE_MAX, BOX_NOISE_MAX)
    x0, y0, x1, y1 = box + noise
    x0, x1 = np.clip([x0, x1], 0, size[1])
    y0, y1 = np.clip([y0, y1], 0, size[0])
    x0, x1 = min(x0, x1 - 1), max(x1, x0 + 1)
    y0, y1 = min(y0, y1 - 1), max(y1, y0 + 1)
    return np.array([x0, y0, x1, y1], dtype=np.float64)


def sample_points(
    mask: np.ndarray, count: int, rng: np.random.Generator, negative_prob: float
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct foreground pixels of ``mask`` (fewer if it is smaller), then maybe one
    background pixel inside the mask's box grown by a quarter of its size on each side."""
    ys, xs = np.nonzero(mask)
    chosen = rng.choice(len(xs), size=min(count, len(xs)), replace=False)
    points = [np.stack([xs[chosen], ys[chosen]], axis=1)]
    labels = [np.ones(len(chosen), dtype=np.int64)]
    if negative_prob > 0 and rng.random() < negative_prob:
        x0, y0, x1, y1 = mask_box(mask).astype(int)
        grow_x, grow_y = (x1 - x0) // 4, (y1 - y0) // 4
        y0, y1 = max(0, y0 - grow_y), min(mask.shape[0], y1 + grow_y)
        x0, x1 = max(0, x0 - grow_x), min(mask.shape[1], x1 + grow_x)
        bg_ys, bg_xs = np.nonzero(~mask[y0:y1, x0:x1])
        if len(bg_xs):
            pick = rng.integers(len(bg_xs))
            points.append(np.array([[bg_xs[pick] + x0, bg_ys[pick] + y0]]))
            labels.append(np.zeros(1, dtype=np.int64))
    return np.concatenate(points).astype(np.float64), np.concatenate(labels)


def interior_point(mask: np.ndarray) -> np.ndarray:
    """(1, 2) ``(x, y)`` of the mask pixel farthest from the background (image border counts
    as background); the first such pixel in raster order."""
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return np.array([[x, y]], dtype=np.float64)


def _read_coco(ann_file: Path) -> COCO:
    if not ann_file.is_file():
        raise DatasetError(
            f"COCO annotation file {ann_file} does not exist; give the instances_*.json of the "
            "dataset (e.g. data/synth/coco/annotations/instances_train.json)."
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(str(ann_file))
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise DatasetError(f"{ann_file} is not a COCO instances file: {exc}") from exc


@DATASETS.register("SamPromptDataset")
class SamPromptDataset:
    """Images of a COCO instances dataset with prompts per instance.

    Args:
        ann_file: COCO instances JSON (RLE or polygon segmentations).
        img_dir: folder the images' ``file_name`` is relative to.
        mode: ``"train"`` (random prompts, drawn from numpy's global RNG, which the training
            engine seeds per sample) or ``"eval"`` (exact box and interior point per instance).
        max_instances: instances per image at most (a random subset in training, the first
            ones in evaluation).
        box_prob: chance that a training prompt is a box rather than points.
        max_points: training point prompts have 1..max_points foreground points.
        negative_prob: chance of one extra background point in a training point prompt.
        min_area: instances with fewer mask pixels are ignored; images without any are skipped.
        transform: called on the sample dict (the training task's ``data_transform``).

    Samples: ``{"image": (H, W, 3) uint8 RGB, "masks": (n, H, W) bool, "prompts": [Prompt],
    "image_id": int}``.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        img_dir: str | os.PathLike,
        mode: str = "train",
        max_instances: int = 8,
        box_prob: float = 0.5,
        max_points: int = 3,
        negative_prob: float = 0.0,
        min_area: int = 4,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"SamPromptDataset mode must be one of {MODES}, not {mode!r}.")
        if max_instances < 1 or max_points < 1:
            raise ConfigError("max_instances and max_points must be at least 1.")
        if not (0.0 <= box_prob <= 1.0 and 0.0 <= negative_prob <= 1.0):
            raise ConfigError("box_prob and negative_prob are probabilities in [0, 1].")
        self.img_dir = Path(img_dir).expanduser()
        if not self.img_dir.is_dir():
            raise DatasetError(f"Image folder {self.img_dir} does not exist.")
        self.coco = _read_coco(Path(ann_file).expanduser())
        self.mode = mode
        self.max_instances = int(max_instances)
        self.box_prob = float(box_prob)
        self.max_points = int(max_points)
        self.negative_prob = float(negative_prob)
        self.min_area = int(min_area)
        self.transform = transform
        self.image_ids = [
            image_id
            for image_id in sorted(self.coco.getImgIds())
            if any(a["area"] >= self.min_area for a in self._annotations(image_id))
        ]
        if not self.image_ids:
            raise DatasetError(f"{ann_file} has no instance of at least {min_area} pixels.")

    def _annotations(self, image_id: int) -> list[dict[str, Any]]:
        ids = self.coco.getAnnIds(imgIds=[image_id], iscrowd=False)
        return self.coco.loadAnns(ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _prompts(self, masks: np.ndarray) -> list[Prompt]:
        prompts = []
        if self.mode == "eval":
            for i, mask in enumerate(masks):
                prompts.append(Prompt(i, box=mask_box(mask)))
                prompts.append(Prompt(i, points=interior_point(mask), labels=np.ones(1, int)))
            return prompts
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        for i, mask in enumerate(masks):
            if rng.random() < self.box_prob:
                prompts.append(Prompt(i, box=jitter_box(mask_box(mask), rng, mask.shape)))
            else:
                count = int(rng.integers(1, self.max_points + 1))
                points, labels = sample_points(mask, count, rng, self.negative_prob)
                prompts.append(Prompt(i, points=points, labels=labels))
        return prompts

    def __getitem__(self, index: int) -> Any:
        image_id = self.image_ids[index]
        info = self.coco.loadImgs([image_id])[0]
        path = self.img_dir / info["file_name"]
        try:
            image = read_image(path)
        except ImageReadError as exc:
            raise DatasetError(f"Image {path} of {image_id=} cannot be read: {exc}") from exc
        with warnings.catch_warnings():  # pycocotools' decoder warns under numpy 2
            warnings.simplefilter("ignore", DeprecationWarning)
            masks = [self.coco.annToMask(a).astype(bool) for a in self._annotations(image_id)]
        masks = [m for m in masks if m.sum() >= self.min_area]
        if self.mode == "train" and len(masks) > self.max_instances:
            keep = np.sort(np.random.choice(len(masks), self.max_instances, replace=False))
            masks = [masks[i] for i in keep]
        masks = masks[: self.max_instances]
        if masks and masks[0].shape != image.shape[:2]:
            raise DatasetError(
                f"Masks of {image_id=} are {masks[0].shape}, the image {image.shape[:2]}."
            )
        stacked = np.stack(masks) if masks else np.zeros((0, *image.shape[:2]), dtype=bool)
        sample = {
            "image": image,
            "masks": stacked,
            "prompts": self._prompts(stacked),
            "image_id": int(image_id),
        }
        return self.transform(sample) if self.transform is not None else sample


class ToSamFrame:
    """Sample transform to SAM's input frame: long side resized to ``img_size``.

    The image is resized as ``SamPredictor`` does (PIL bilinear) and becomes a (3, h, w) uint8
    tensor (normalising and padding happen when batching); masks are resized bilinearly and
    thresholded at 0.5, prompts scaled by the same factors. Adds ``"input_size": (h, w)``.
    """

    def __init__(self, img_size: int) -> None:
        self.resize = ResizeLongestSide(int(img_size))

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = sample["image"]
        height, width = image.shape[:2]
        resized = self.resize.apply_image(image)
        new_h, new_w = resized.shape[:2]
        masks = torch.from_numpy(sample["masks"])
        if (new_h, new_w) != (height, width) and len(masks) == 0:
            masks = torch.zeros((0, new_h, new_w), dtype=torch.bool)
        elif (new_h, new_w) != (height, width):
            masks = F.interpolate(masks[:, None].float(), (new_h, new_w), mode="bilinear")
            masks = masks[:, 0] >= 0.5
        scale = np.array([new_w / width, new_h / height])
        prompts = [
            Prompt(
                p.instance,
                box=None if p.box is None else (p.box.reshape(2, 2) * scale).reshape(4),
                points=None if p.points is None else p.points * scale,
                labels=p.labels,
            )
            for p in sample["prompts"]
        ]
        return {
            **sample,
            "image": torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1),
            "masks": masks,
            "prompts": prompts,
            "input_size": (new_h, new_w),
        }
