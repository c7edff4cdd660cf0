"""The synthetic open-vocabulary world: coloured shapes on textured stuff, with captions.

A scene is a square RGB image (default 128x128) with one or two stuff regions (grass, sand,
water, wall; two regions are split by a wavy horizontal boundary, top and bottom, half of the
time) and 1-4 objects, each a "<colour> <shape>" thing class. Later objects occlude earlier
ones; every object keeps at least half of its pixels visible. The label map, instance masks and
boxes describe visible pixels only. Training scenes never contain an unseen class
(``UNSEEN_CLASSES``); validation/test scenes draw about a third of their objects from them.
With ``neighbour_fraction`` > 0, each object after the first is, with that probability, a
different shape of the same colour as an earlier object, placed against it (touching or
slightly overlapping): same-coloured neighbours are the hardest case for a dense model, since
only the outline tells the two apart.

Generation is deterministic given the ``numpy.random.Generator`` passed in; ``scene_rng`` gives
the per-scene generator the writers use, so scene ``i`` of a split does not depend on how many
scenes are generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovseg.data.phrasing import scene_caption
from ovseg.data.shape_masks import sample_angle, shape_mask
from ovseg.data.synthetic_vocab import (
    CLASS_NAMES,
    COLOURS,
    NUM_CLASSES,
    NUM_THINGS,
    SEEN_CLASSES,
    SEEN_THING_IDS,
    SHAPES,
    STUFF_CLASSES,
    THING_CLASSES,
    UNSEEN_CLASSES,
    UNSEEN_IDS,
    split_thing,
    stuff_id,
    thing_id,
    write_class_file,
)
from ovseg.data.textures import render_texture
from ovseg.registry import DATASETS

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "SEEN_CLASSES",
    "STUFF_CLASSES",
    "THING_CLASSES",
    "UNSEEN_CLASSES",
    "Scene",
    "SceneObject",
    "SyntheticSceneDataset",
    "generate_scene",
    "scene_rng",
    "write_class_file",
]

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}
_NUM_OBJECTS_P = (0.2, 0.3, 0.3, 0.2)  # probabilities of 1, 2, 3, 4 objects


@dataclass
class SceneObject:
    """One thing instance of a scene.

    ``mask`` is the (H, W) bool mask of its visible pixels; ``box`` the XYXY pixel box of those
    pixels with exclusive right/bottom edges (width = x1 - x0); ``center``/``size``/``angle``
    are the drawing parameters (x, y pixels; diameter px; degrees); ``full_area`` counts its
    pixels before occlusion.
    """

    class_id: int
    colour: str
    shape: str
    mask: np.ndarray
    box: tuple[int, int, int, int]
    center: tuple[float, float]
    size: float
    angle: float
    full_area: int

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.class_id]

    @property
    def area(self) -> int:
        """Number of visible pixels."""
        return int(self.mask.sum())


@dataclass
class Scene:
    """A generated scene.

    ``image``: (H, W, 3) uint8 RGB. ``label``: (H, W) int64 class index into ``CLASS_NAMES`` for
    every pixel (no ignore value). ``instances``: visible objects in drawing order (later ones
    on top). ``stuff``: stuff classes present, most visible area first.
    """

    image: np.ndarray
    label: np.ndarray
    instances: list[SceneObject]
    caption: str
    stuff: tuple[str, ...] = field(default=())

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float32 XYXY pixel boxes of the visible objects."""
        return np.array([o.box for o in self.instances], dtype=np.float32).reshape(-1, 4)

    @property
    def class_ids(self) -> np.ndarray:
        """(N,) int64 class indices of the objects."""
        return np.array([o.class_id for o in self.instances], dtype=np.int64)

    @property
    def masks(self) -> np.ndarray:
        """(N, H, W) bool visible masks."""
        h, w = self.label.shape
        return np.array([o.mask for o in self.instances], dtype=bool).reshape(-1, h, w)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for scene ``index`` of ``split`` under a dataset seed."""
    return np.random.default_rng([int(seed), _split_code(split), int(index)])


def _split_code(split: str) -> int:
    try:
        return SPLIT_CODES[split]
    except KeyError:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}.") from None


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight XYXY box (exclusive right/bottom) of a non-empty (H, W) bool mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Stuff image (H, W, 3) float32 and label (H, W) int64: one region, or top/bottom two."""
    if rng.random() < 0.5:
        name = STUFF_CLASSES[int(rng.integers(len(STUFF_CLASSES)))]
        return render_texture(name, rng, size, size), np.full((size, size), stuff_id(name))
    top, bottom = rng.choice(len(STUFF_CLASSES), size=2, replace=False)
    top_img = render_texture(STUFF_CLASSES[top], rng, size, size)
    bottom_img = render_texture(STUFF_CLASSES[bottom], rng, size, size)
    x = np.arange(size, dtype=np.float32)
    line = size * rng.uniform(0.3, 0.7) + rng.uniform(1, 4) * size / 128 * np.sin(
        2 * np.pi * x / (size * rng.uniform(0.3, 0.8)) + rng.uniform(0, 2 * np.pi)
    )
    is_top = np.arange(size, dtype=np.float32)[:, None] < line[None, :]
    image = np.where(is_top[..., None], top_img, bottom_img)
    label = np.where(is_top, stuff_id(STUFF_CLASSES[top]), stuff_id(STUFF_CLASSES[bottom]))
    return image, label.astype(np.int64)


def _sample_class(rng: np.random.Generator, split: str, unseen_fraction: float) -> int:
    if split != "train" and rng.random() < unseen_fraction:
        return int(UNSEEN_IDS[int(rng.integers(len(UNSEEN_IDS)))])
    return int(SEEN_THING_IDS[int(rng.integers(len(SEEN_THING_IDS)))])


def _sample_neighbour_class(
    rng: np.random.Generator, split: str, unseen_fraction: float, colour: str, shape: str
) -> int | None:
    """A class of ``colour`` but not ``shape`` (seen only for ``train``; for val/test an unseen
    one with ``unseen_fraction`` when the colour has one), or None when there is none."""
    others = [thing_id(colour, other) for other in SHAPES if other != shape]
    seen = [c for c in others if c in SEEN_THING_IDS]
    unseen = [c for c in others if c in UNSEEN_IDS]
    if split != "train" and unseen and rng.random() < unseen_fraction:
        return int(unseen[int(rng.integers(len(unseen)))])
    return int(seen[int(rng.integers(len(seen)))]) if seen else None


def _neighbour_center(
    rng: np.random.Generator, neighbour: dict[str, Any], radius: float, size: int
) -> tuple[float, float]:
    """A centre (x, y pixels) ``radius`` from the image border whose object of that radius
    touches ``neighbour`` or overlaps it a little: the centres lie 0.75-1.05 times the sum of
    the two radii apart, in a random direction."""
    direction = rng.uniform(0.0, 2 * np.pi)
    distance = (neighbour["size"] / 2 + radius) * rng.uniform(0.75, 1.05)
    x = neighbour["center"][0] + distance * np.cos(direction)
    y = neighbour["center"][1] + distance * np.sin(direction)
    return float(np.clip(x, radius, size - radius)), float(np.clip(y, radius, size - radius))


def _paint_object(
    image: np.ndarray,
    mask: np.ndarray,
    colour: str,
    center: tuple[float, float],
    size: float,
    rng: np.random.Generator,
) -> None:
    """Paint ``mask`` pixels of ``image`` (H, W, 3 float32) with a jittered, shaded colour."""
    base = np.asarray(COLOURS[colour], np.float32) + rng.uniform(-12, 12, 3).astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0.05, 0.15)
    ys, xs = np.nonzero(mask)
    proj = ((xs - center[0]) * np.cos(phi) + (ys - center[1]) * np.sin(phi)) / (size / 2)
    shade = (1.0 + amp * proj).astype(np.float32)
    noise = rng.normal(0.0, 5.0, (len(ys), 3)).astype(np.float32)
    image[ys, xs] = base[None, :] * shade[:, None] + noise


def generate_scene(
    rng: np.random.Generator,
    *,
    image_size: int = 128,
    split: str = "train",
    num_objects: int | None = None,
    unseen_fraction: float = 1 / 3,
    min_visible: float = 0.5,
    neighbour_fraction: float = 0.0,
) -> Scene:
    """Generate one scene; deterministic given ``rng``'s state.

    Args:
        rng: the random generator (e.g. ``scene_rng(seed, split, index)``).
        image_size: side of the square image in pixels; object sizes (22-60 px at 128) scale.
        split: "train" (seen classes only) or "val"/"test" (all classes).
        num_objects: 1-4 objects; random (20/30/30/20 %) when None. Objects that cannot be
            placed with enough of everything visible are dropped, so a scene may hold fewer.
        unseen_fraction: probability that a val/test object is of an unseen class.
        min_visible: fraction of each object's pixels that must stay visible.
        neighbour_fraction: probability that an object after the first is a same-coloured
            neighbour of an earlier one (module docstring); 0 draws no extra random numbers, so
            scenes are those of earlier versions.
    """
    _split_code(split)
    size = int(image_size)
    scale = size / 128.0
    image, label = _background(rng, size)
    if num_objects is None:
        num_objects = int(rng.choice(4, p=_NUM_OBJECTS_P)) + 1

    owner = np.full((size, size), -1, dtype=np.int64)
    placed: list[dict[str, Any]] = []
    min_area = 60 * scale * scale
    for _ in range(num_objects):
        neighbour, class_id = None, None
        if placed and neighbour_fraction > 0 and rng.random() < neighbour_fraction:
            neighbour = placed[int(rng.integers(len(placed)))]
            class_id = _sample_neighbour_class(
                rng, split, unseen_fraction, neighbour["colour"], neighbour["shape"]
            )
            if class_id is None:
                neighbour = None
        if class_id is None:
            class_id = _sample_class(rng, split, unseen_fraction)
        colour, shape = split_thing(class_id)
        max_size = 60.0 if num_objects <= 2 else 48.0
        for _attempt in range(30):
            diameter = float(rng.uniform(22.0, max_size)) * scale
            r = diameter / 2
            if neighbour is not None:
                center = _neighbour_center(rng, neighbour, r, size)
            else:
                center = (float(rng.uniform(r, size - r)), float(rng.uniform(r, size - r)))
            angle = sample_angle(shape, rng)
            mask = shape_mask(shape, center, diameter, angle, size, size)
            full_area = int(mask.sum())
            if full_area < min_area:
                continue
            trial = owner.copy()
            trial[mask] = len(placed)
            if all(
                (trial == j).sum() >= min_visible * p["full_area"] for j, p in enumerate(placed)
            ):
                owner = trial
                placed.append(
                    dict(
                        class_id=class_id,
                        colour=colour,
                        shape=shape,
                        mask=mask,
                        center=center,
                        size=diameter,
                        angle=angle,
                        full_area=full_area,
                    )
                )
                break

    instances: list[SceneObject] = []
    for j, p in enumerate(placed):
        visible = owner == j
        _paint_object(image, visible, p["colour"], p["center"], p["size"], rng)
        label[visible] = p["class_id"]
        instances.append(
            SceneObject(
                mask=visible, box=mask_box(visible), **{k: v for k, v in p.items() if k != "mask"}
            )
        )
    image = image + rng.normal(0.0, 2.5, image.shape).astype(np.float32)
    image_u8 = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    stuff_ids, counts = np.unique(label[label >= NUM_THINGS], return_counts=True)
    stuff = tuple(CLASS_NAMES[int(i)] for i in stuff_ids[np.argsort(-counts, kind="stable")])
    order = rng.permutation(len(instances))
    caption = scene_caption(
        [instances[i].name for i in order], [instances[i].box for i in order], stuff, rng
    )
    return Scene(image=image_u8, label=label, instances=instances, caption=caption, stuff=stuff)


@DATASETS.register()
class SyntheticSceneDataset:
    """In-memory synthetic scenes generated on the fly (no files).

    ``__getitem__`` returns {"image": (H, W, 3) uint8 RGB, "label": (H, W) int64 (no ignore
    pixels), "caption": str, "filename": str}. ``class_names``/``unseen`` as for ADE20KDataset.
    """

    def __init__(self, num: int = 100, seed: int = 0, split: str = "val", image_size: int = 128):
        _split_code(split)
        self.num, self.seed, self.split, self.image_size = int(num), int(seed), split, image_size
        self.class_names = list(CLASS_NAMES)
        self.unseen = list(UNSEEN_CLASSES)

    def __len__(self) -> int:
        return self.num

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.num:
            raise IndexError(f"index {index} out of range for {self.num} scenes")
        rng = scene_rng(self.seed, self.split, index)
        return generate_scene(rng, image_size=self.image_size, split=self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.scene(index)
        return {
            "image": s.image,
            "label": s.label,
            "caption": s.caption,
            "filename": f"synthetic_{self.split}_{index:08d}",
        }
