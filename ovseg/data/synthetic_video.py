"""Synthetic video clips of the shapes world, with per-frame ground truth in YouTube-VIS layout.

A clip is ``num_frames`` square frames of one static textured background (the world's stuff,
fresh pixel noise per frame) with 1-3 objects of distinct "<colour> <shape>" classes moving along
straight lines at constant speed, slowly turning (objects inside the frame move 0.5-2 px per
frame at 64 px, so consecutive masks overlap as in real video). Objects are drawn in a fixed order (later ones on top), so
paths that cross make occlusions; with probability ``p_cross`` the top object's path passes over
the first object's mid-clip position. An object may enter (start fully outside the frame) or
exit (end fully outside) with probability ``p_enter`` / ``p_exit``. Ground truth is each
object's *visible* mask per frame (empty while it is occluded or outside).

:func:`write_synthetic_videos` writes ``<out>/<split>/JPEGImages/<clip>/<frame>.jpg`` and
``<out>/<split>.json`` in the YouTube-VIS 2019 layout: ``videos`` (``id``, ``file_names``,
``width``, ``height``, ``length``), ``annotations`` (one per object: ``video_id``,
``category_id``, ``segmentations`` / ``areas`` / ``bboxes`` per frame, ``None`` where the
object is not visible; compressed RLE, boxes XYWH), ``categories`` (the world's 64 thing classes,
ids 1-64). Generation is deterministic given the seed; clip ``i`` does not depend on how many
clips are written.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.data.shape_masks import sample_angle, shape_mask
from ovseg.data.synthetic import SPLIT_CODES, _background, _sample_class
from ovseg.data.synthetic_vocab import COLOURS, NUM_THINGS, THING_CLASSES, split_thing
from ovseg.errors import ConfigError
from ovseg.fileio import atomic_write_json, save_jpeg

__all__ = ["ClipObject", "VideoClip", "clip_rng", "generate_clip", "write_synthetic_videos"]

YTVIS_SPLITS = {"train": "train", "val": "valid"}


@dataclass
class ClipObject:
    """One object of a clip: ``masks`` ``(T, H, W)`` bool visible pixels per frame; ``path``
    the ``(T, 2)`` centre ``(x, y)`` per frame; ``kind`` ``stay`` / ``enter`` / ``exit``."""

    class_id: int
    masks: np.ndarray
    path: np.ndarray
    kind: str

    @property
    def name(self) -> str:
        return THING_CLASSES[self.class_id]


@dataclass
class VideoClip:
    """``frames``: ``T`` frames ``(H, W, 3)`` uint8; ``objects`` in drawing order."""

    frames: list[np.ndarray]
    objects: list[ClipObject]


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of clip ``index`` of ``split`` (a stream apart from the image scenes')."""
    if split not in SPLIT_CODES:
        raise ConfigError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}.")
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index), 0x5649])


def _unit(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0.0, 2 * np.pi)
    return np.array([np.cos(angle), np.sin(angle)])


def _edge_path(rng: np.random.Generator, size: int, r: float) -> tuple[np.ndarray, np.ndarray]:
    """``(outside, inside)``: a centre just beyond a random edge (the whole shape out of the
    frame) and one up to ``2 r`` inside that edge, straight across it."""
    side = int(rng.integers(4))
    along = rng.uniform(r, size - r)
    depth = rng.uniform(r, 2 * r)  # how far inside the inner point lies
    out_pos, in_pos = -r - 1.0, depth
    if side >= 2:  # right / bottom edges
        out_pos, in_pos = size + r + 1.0, size - depth
    if side % 2 == 0:  # left / right: x changes
        return np.array([out_pos, along]), np.array([in_pos, along])
    return np.array([along, out_pos]), np.array([along, in_pos])


def _paths(
    rng: np.random.Generator, count: int, size: int, diameters: list[float], num_frames: int,
    p_enter: float, p_exit: float, p_cross: float,
) -> tuple[list[np.ndarray], list[str]]:  # fmt: skip
    """Straight paths, slow enough for frame-to-frame overlap: objects inside the frame move
    0.5-2 px per frame (at 64 px; scaled with the size), entering and exiting ones cross the
    edge over the clip, and a crossing occluder travels 0.6 of its diameter."""
    paths, kinds = [], []
    t = np.linspace(0.0, 1.0, num_frames)[:, None]
    scale = size / 64.0
    for i in range(count):
        r = diameters[i] / 2
        start = rng.uniform(r, size - r, 2)
        speed = rng.uniform(0.5, 2.0) * scale
        end = np.clip(start + _unit(rng) * speed * (num_frames - 1), r, size - r)
        kind = "stay"
        roll = rng.random()
        if roll < p_enter:
            start, end = _edge_path(rng, size, r)
            kind = "enter"
        elif roll < p_enter + p_exit:
            end, start = _edge_path(rng, size, r)
            kind = "exit"
        if i == count - 1 and i > 0 and kind == "stay" and rng.random() < p_cross:
            middle = paths[0][num_frames // 2]
            offset = _unit(rng) * diameters[i] * 0.3
            start, end = middle - offset, middle + offset
        paths.append(start[None] + t * (end - start)[None])
        kinds.append(kind)
    return paths, kinds


def generate_clip(
    rng: np.random.Generator,
    *,
    num_frames: int = 12,
    image_size: int = 64,
    split: str = "val",
    num_objects: int | None = None,
    unseen_fraction: float = 1 / 3,
    p_enter: float = 0.2,
    p_exit: float = 0.2,
    p_cross: float = 0.6,
) -> VideoClip:
    """One clip (see the module docstring); deterministic given ``rng``'s state."""
    if int(num_frames) < 2:
        raise ConfigError(f"A clip needs at least 2 frames, got {num_frames}.")
    size = int(image_size)
    scale = size / 64.0
    background, _ = _background(rng, size)
    count = int(num_objects) if num_objects is not None else int(rng.integers(1, 4))
    classes: list[int] = []
    while len(classes) < count:
        class_id = _sample_class(rng, split, unseen_fraction)
        if class_id not in classes:
            classes.append(class_id)
    diameters = [float(rng.uniform(14.0, 26.0)) * scale for _ in classes]
    angles = [sample_angle(split_thing(c)[1], rng) for c in classes]
    spins = [float(rng.uniform(-6, 6)) for _ in classes]  # degrees per frame
    paths, kinds = _paths(rng, count, size, diameters, num_frames, p_enter, p_exit, p_cross)
    looks = [
        (
            np.asarray(COLOURS[split_thing(c)[0]], np.float32) + rng.uniform(-12, 12, 3),
            float(rng.uniform(0, 2 * np.pi)),
            float(rng.uniform(0.05, 0.15)),
        )
        for c in classes
    ]
    frames: list[np.ndarray] = []
    visible = np.zeros((count, num_frames, size, size), dtype=bool)
    for f in range(num_frames):
        image = background.copy()
        owner = np.full((size, size), -1, dtype=np.int64)
        for i, class_id in enumerate(classes):
            cx, cy = paths[i][f]
            shape = split_thing(class_id)[1]
            mask = shape_mask(shape, (cx, cy), diameters[i], angles[i] + spins[i] * f, size, size)
            owner[mask] = i
        for i in range(count):
            mask = owner == i
            visible[i, f] = mask
            if not mask.any():
                continue
            base, phi, amp = looks[i]
            ys, xs = np.nonzero(mask)
            cx, cy = paths[i][f]
            proj = ((xs - cx) * np.cos(phi) + (ys - cy) * np.sin(phi)) / (diameters[i] / 2)
            shade = (1.0 + amp * proj).astype(np.float32)
            image[ys, xs] = base[None] * shade[:, None] + rng.normal(0, 5.0, (len(ys), 3))
        image = image + rng.normal(0.0, 2.5, image.shape).astype(np.float32)
        frames.append(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    objects = [
        ClipObject(class_id, visible[i], paths[i].astype(np.float32), kinds[i])
        for i, class_id in enumerate(classes)
    ]
    return VideoClip(frames, objects)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def _xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    x0, y0 = float(xs.min()), float(ys.min())
    return [x0, y0, float(xs.max() + 1) - x0, float(ys.max() + 1) - y0]


def ytvis_categories() -> list[dict[str, Any]]:
    return [
        {"id": i + 1, "name": THING_CLASSES[i], "supercategory": split_thing(i)[1]}
        for i in range(NUM_THINGS)
    ]


def write_synthetic_videos(
    out_dir: str | os.PathLike,
    *,
    num_train: int,
    num_val: int,
    seed: int = 0,
    num_frames: int = 12,
    image_size: int = 64,
    overwrite: bool = False,
    progress: bool = False,
    **clip_options: Any,
) -> dict[str, Any]:
    """Write ``num_train`` / ``num_val`` clips (module docstring); returns a summary, also in
    ``<out>/synthetic_videos.json``. ``clip_options`` go to :func:`generate_clip`
    (``num_objects``, ``p_enter``, ``p_exit``, ``p_cross`` ...)."""
    out = Path(out_dir)
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ConfigError("Give a positive number of clips (--num / --num-val).")
    taken = [out / name for name in YTVIS_SPLITS.values() if (out / name).exists()]
    if taken and not overwrite:
        raise ConfigError(
            f"{taken[0]} exists; pass --overwrite to replace it, or choose another --out."
        )
    for path in taken:
        shutil.rmtree(path)
    summary: dict[str, Any] = {"seed": seed, "num_frames": num_frames, "image_size": image_size}
    for split, count in (("train", num_train), ("val", num_val)):
        if count == 0:
            continue
        name = YTVIS_SPLITS[split]
        videos, annotations = [], []
        clips = range(count)
        if progress:
            from tqdm import tqdm

            clips = tqdm(clips, desc=f"video clips ({split})")
        for index in clips:
            clip = generate_clip(
                clip_rng(seed, split, index),
                num_frames=num_frames,
                image_size=image_size,
                split=split,
                **clip_options,
            )
            clip_name = f"clip{index:05d}"
            names = []
            for f, frame in enumerate(clip.frames):
                rel = f"{clip_name}/{f:05d}.jpg"
                save_jpeg(out / name / "JPEGImages" / rel, frame)
                names.append(rel)
            video_id = index + 1
            videos.append(
                {
                    "id": video_id,
                    "file_names": names,
                    "width": image_size,
                    "height": image_size,
                    "length": num_frames,
                }
            )
            for obj in clip.objects:
                present = [bool(m.any()) for m in obj.masks]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "video_id": video_id,
                        "category_id": obj.class_id + 1,
                        "iscrowd": 0,
                        "height": image_size,
                        "width": image_size,
                        "length": 1,
                        "segmentations": [
                            _rle(m) if p else None for m, p in zip(obj.masks, present, strict=True)
                        ],
                        "areas": [
                            float(m.sum()) if p else None
                            for m, p in zip(obj.masks, present, strict=True)
                        ],
                        "bboxes": [
                            _xywh(m) if p else None for m, p in zip(obj.masks, present, strict=True)
                        ],
                        "motion": obj.kind,
                    }
                )
        data = {
            "info": {"description": "ovseg synthetic shapes videos", "seed": seed, "split": split},
            "videos": videos,
            "annotations": annotations,
            "categories": ytvis_categories(),
        }
        atomic_write_json(out / f"{name}.json", data)
        summary[split] = {
            "json": str(out / f"{name}.json"),
            "frames": str(out / name / "JPEGImages"),
            "clips": count,
            "objects": len(annotations),
        }
    atomic_write_json(out / "synthetic_videos.json", summary, indent=2)
    return summary
