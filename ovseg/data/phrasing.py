"""Caption phrasing for the synthetic world: things, stuff, vertical relations, templates.

Relations are vertical ("above", "below") or the symmetric "next to"; never left/right, because
training augments with horizontal flips. Boxes are XYXY pixels (x right, y down).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STUFF_PHRASE: dict[str, str] = {
    "grass": "on grass",
    "sand": "on sand",
    "water": "on water",
    "wall": "in front of a wall",
}
STUFF_NOUN: dict[str, str] = {"grass": "grass", "sand": "sand", "water": "water", "wall": "a wall"}

SCENE_TEMPLATES: tuple[str, ...] = (
    "{desc}",
    "a photo of {desc}",
    "an image of {desc}",
    "a picture of {desc}",
    "there is {desc}",
)
OBJECT_TEMPLATES: tuple[str, ...] = (
    "{a} {stuff}",
    "a photo of {a} {stuff}",
    "{bare} {stuff}",
    "a photo of {a}",
    "{a}",
    "{bare}",
    "a close-up of {a} {stuff}",
)
STUFF_TEMPLATES: tuple[str, ...] = (
    "{name}",
    "a photo of {noun}",
    "a patch of {name}",
    "{name} background",
)


def with_article(name: str) -> str:
    """'red star' -> 'a red star'; 'orange ring' -> 'an orange ring'."""
    return ("an " if name[0] in "aeiou" else "a ") + name


def stuff_phrase(stuff: Sequence[str]) -> str:
    """Phrase for the scene background: 'on sand' or, for two regions, 'on sand and water'.

    ``stuff`` lists the stuff classes from the most to the least prominent.
    """
    if not stuff:
        return ""
    phrase = STUFF_PHRASE[stuff[0]]
    for extra in stuff[1:]:
        phrase += f" and {STUFF_NOUN[extra]}"
    return phrase


def relation(box_a: Sequence[float], box_b: Sequence[float]) -> str:
    """Vertical relation of box ``a`` to box ``b``: 'above', 'below' or 'next to'.

    'above' when a's centre is higher than b's by more than a quarter of their summed heights.
    """
    cy_a = (box_a[1] + box_a[3]) / 2.0
    cy_b = (box_b[1] + box_b[3]) / 2.0
    margin = 0.25 * ((box_a[3] - box_a[1]) + (box_b[3] - box_b[1]))
    if cy_b - cy_a > margin:
        return "above"
    if cy_a - cy_b > margin:
        return "below"
    return "next to"


def describe_things(
    names: Sequence[str], boxes: Sequence[Sequence[float]], rng: np.random.Generator
) -> str:
    """'a red star above a blue ring and a green cross' for things listed in caption order."""
    parts = [with_article(n) for n in names]
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    if len(parts) <= 3 and rng.random() < 0.75:
        head = f"{parts[0]} {relation(boxes[0], boxes[1])} {parts[1]}"
        return head if len(parts) == 2 else f"{head} and {parts[2]}"
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def scene_caption(
    names: Sequence[str],
    boxes: Sequence[Sequence[float]],
    stuff: Sequence[str],
    rng: np.random.Generator,
) -> str:
    """Whole-scene caption, e.g. 'a photo of a red star above a blue ring on sand'."""
    desc = " ".join(p for p in (describe_things(names, boxes, rng), stuff_phrase(stuff)) if p)
    template = SCENE_TEMPLATES[int(rng.integers(len(SCENE_TEMPLATES)))]
    return template.format(desc=desc)


def object_caption(
    name: str,
    stuff: str | None,
    rng: np.random.Generator,
    *,
    other: str | None = None,
    rel: str = "next to",
) -> str:
    """Caption of an object crop: 'a red star on sand', 'red star next to a blue ring on grass'."""
    a, bare = with_article(name), name
    if other is not None:
        a = f"{a} {rel} {with_article(other)}"
        bare = f"{bare} {rel} {with_article(other)}"
    template = OBJECT_TEMPLATES[int(rng.integers(len(OBJECT_TEMPLATES)))]
    if stuff is None:
        template = template.replace(" {stuff}", "")
    return template.format(a=a, bare=bare, stuff=STUFF_PHRASE[stuff] if stuff else "")


def stuff_caption(name: str, rng: np.random.Generator) -> str:
    """Caption of a pure stuff crop: 'sand', 'a photo of a wall', 'a patch of grass'."""
    template = STUFF_TEMPLATES[int(rng.integers(len(STUFF_TEMPLATES)))]
    return template.format(name=name, noun=STUFF_NOUN[name])
