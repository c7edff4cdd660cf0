"""Class vocabulary of the synthetic open-vocabulary world.

The world has 8 colours x 8 shapes = 64 "thing" classes named ``"<colour> <shape>"`` and 4
textured "stuff" classes. The canonical class order (``CLASS_NAMES``) is things first, colour
major (``index = colour_index * 8 + shape_index``), then stuff; the thing index plus one is the
COCO category id.

Open-vocabulary split: 8 colour-shape combinations, one per colour and one per shape (a Latin
square, ``shape = (3 * colour + 2) mod 8``), are UNSEEN. They never occur in a training scene,
label or caption; validation scenes contain them often.
"""

from __future__ import annotations

import os
from pathlib import Path

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 45),
    "green": (45, 165, 60),
    "cyan": (40, 205, 215),
    "blue": (40, 70, 210),
    "purple": (135, 55, 185),
    "pink": (245, 135, 195),
}
"""Colour name -> base RGB (uint8 range). Objects jitter and shade around it."""

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "diamond",
    "hexagon",
)

STUFF_CLASSES: tuple[str, ...] = ("grass", "sand", "water", "wall")

COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

THING_CLASSES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOUR_NAMES for s in SHAPES)

CLASS_NAMES: tuple[str, ...] = THING_CLASSES + STUFF_CLASSES
"""Canonical class order: 64 things (colour major) then 4 stuff classes. Index = label value."""

NUM_CLASSES: int = len(CLASS_NAMES)
NUM_THINGS: int = len(THING_CLASSES)

UNSEEN_CLASSES: tuple[str, ...] = tuple(
    f"{c} {SHAPES[(3 * i + 2) % len(SHAPES)]}" for i, c in enumerate(COLOUR_NAMES)
)
"""The 8 held-out colour-shape combinations (one per colour, one per shape)."""

SEEN_CLASSES: tuple[str, ...] = tuple(n for n in CLASS_NAMES if n not in UNSEEN_CLASSES)
"""All classes that training may show: 56 things and the stuff classes."""

UNSEEN_IDS: tuple[int, ...] = tuple(CLASS_NAMES.index(n) for n in UNSEEN_CLASSES)
SEEN_THING_IDS: tuple[int, ...] = tuple(
    i for i, n in enumerate(THING_CLASSES) if n not in UNSEEN_CLASSES
)

PACKAGED_CLASS_FILE = (
    Path(__file__).resolve().parent.parent / "model_zoo" / "classes" / "shapes.txt"
)


def thing_id(colour: str, shape: str) -> int:
    """Class index of ``"<colour> <shape>"`` in ``CLASS_NAMES``."""
    return COLOUR_NAMES.index(colour) * len(SHAPES) + SHAPES.index(shape)


def stuff_id(name: str) -> int:
    """Class index of a stuff class in ``CLASS_NAMES``."""
    return NUM_THINGS + STUFF_CLASSES.index(name)


def split_thing(class_id: int) -> tuple[str, str]:
    """(colour, shape) of a thing class index."""
    if not 0 <= class_id < NUM_THINGS:
        raise ValueError(f"{class_id} is not a thing class index (0..{NUM_THINGS - 1}).")
    return COLOUR_NAMES[class_id // len(SHAPES)], SHAPES[class_id % len(SHAPES)]


def class_file_text() -> str:
    """The class file contents: one class per line in canonical order, newline terminated."""
    return "".join(f"{name}\n" for name in CLASS_NAMES)


def write_class_file(path: str | os.PathLike) -> Path:
    """Write the class list to ``path`` atomically (temp name + rename); returns the path."""
    from ovseg.fileio import atomic_write_text

    path = Path(path)
    atomic_write_text(path, class_file_text())
    return path
