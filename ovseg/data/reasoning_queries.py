"""Referring and reasoning queries about a synthetic scene, each with its target mask(s).

From a :class:`~ovseg.data.synthetic.Scene`'s layout (visible masks, boxes, classes) this module
writes questions whose answer is unambiguous in that scene, in five kinds:

``class``        "red star": every instance of a class present in the scene.
``relation``     "the shape above the red star", "the circle next to the blue ring": the one
                 object in that vertical relation to a uniquely named anchor. Relations are
                 vertical or "next to" only (:func:`ovseg.data.phrasing.relation`), because
                 training flips images horizontally.
``attribute``    "the object with the same colour as the ring": the one other object sharing
                 the anchor's colour (or shape).
``superlative``  "the largest circle", "the smallest red shape", "the topmost shape": among at
                 least two candidates, one that wins by a clear margin (visible area at least
                 ``AREA_MARGIN`` times the runner-up's; box centres ``HEIGHT_MARGIN`` of the image
                 apart).
``count``        "the two blue shapes": all objects of a colour or shape when there are exactly
                 that many (2-4) of them.

A query names its targets through their indices in ``scene.instances``. Its group is
``unseen`` when any object it names or targets is of an unseen class (never in training
scenes), else ``seen``. Generation is deterministic given the scene and the generator passed to
:func:`sample_queries`; :func:`scene_queries` lists every query in a fixed order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ovseg.data.phrasing import relation
from ovseg.data.synthetic import Scene, SceneObject
from ovseg.data.synthetic_vocab import UNSEEN_CLASSES

QUERY_KINDS: tuple[str, ...] = ("class", "relation", "attribute", "superlative", "count")
AREA_MARGIN = 1.25
HEIGHT_MARGIN = 0.15
COUNT_WORDS = {2: "two", 3: "three", 4: "four"}
NOUNS = ("shape", "object")

SEG_TOKEN = "[SEG]"
DEFAULT_ANSWER = "Sure, it is [SEG]."
# LISA's wordings: a class name goes into a short question, a referring sentence into a long one
SHORT_QUESTIONS: tuple[str, ...] = (
    "Can you segment the {phrase} in this image?",
    "Please segment the {phrase} in this image.",
    "What is {phrase} in this image? Please respond with segmentation mask.",
    "What is {phrase} in this image? Please output segmentation mask.",
)
LONG_QUESTIONS: tuple[str, ...] = (
    "What is {phrase} in this image? Please respond with segmentation mask.",
    "Which object is {phrase}? Please output segmentation mask.",
)
ANSWERS: tuple[str, ...] = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
)


@dataclass(frozen=True)
class Query:
    """One question about a scene.

    ``text``: the referring phrase ("the shape above the red star"). ``targets``: indices into
    ``scene.instances`` of the objects it refers to (one or more). ``kind``: one of
    ``QUERY_KINDS``. ``group``: ``seen`` or ``unseen``. ``mentioned``: indices of the other
    objects the phrase names (anchors).
    """

    text: str
    targets: tuple[int, ...]
    kind: str
    group: str
    mentioned: tuple[int, ...] = field(default=())

    def masks(self, scene: Scene) -> np.ndarray:
        """``(len(targets), H, W)`` bool visible masks of the targets, in target order."""
        return np.stack([scene.instances[i].mask for i in self.targets])

    def target_mask(self, scene: Scene) -> np.ndarray:
        """``(H, W)`` bool union of the targets' masks."""
        return self.masks(scene).any(axis=0)


def _group(objects: Sequence[SceneObject], indices: Sequence[int]) -> str:
    return "unseen" if any(objects[i].name in UNSEEN_CLASSES for i in indices) else "seen"


def _make(
    objects: Sequence[SceneObject],
    text: str,
    targets: Sequence[int],
    kind: str,
    mentioned: Sequence[int] = (),
) -> Query:
    targets, mentioned = tuple(int(i) for i in targets), tuple(int(i) for i in mentioned)
    return Query(text, targets, kind, _group(objects, targets + mentioned), mentioned)


def _unique(objects: Sequence[SceneObject], pred: Callable[[SceneObject], bool]) -> int | None:
    """The index of the only object satisfying ``pred``, or None when there are 0 or several."""
    hits = [i for i, o in enumerate(objects) if pred(o)]
    return hits[0] if len(hits) == 1 else None


def _anchor_names(objects: Sequence[SceneObject], index: int) -> list[str]:
    """Ways to name object ``index`` unambiguously: its class, its shape, its colour + noun."""
    obj = objects[index]
    names = []
    if _unique(objects, lambda o: o.name == obj.name) is not None:
        names.append(obj.name)
    if _unique(objects, lambda o: o.shape == obj.shape) is not None:
        names.append(obj.shape)
    if _unique(objects, lambda o: o.colour == obj.colour) is not None:
        names.append(f"{obj.colour} shape")
    return names


def class_queries(scene: Scene) -> list[Query]:
    """One query per class present: its name; targets all of its instances."""
    objects = scene.instances
    out = []
    for name in dict.fromkeys(o.name for o in objects):
        targets = [i for i, o in enumerate(objects) if o.name == name]
        out.append(_make(objects, name, targets, "class"))
    return out


def relation_queries(scene: Scene) -> list[Query]:
    """ "the <noun> <above|below|next to> the <anchor>" with exactly one object in that relation.

    The noun is generic ("shape"/"object", the relation alone must single the target out) or
    the target's shape ("circle", then only circles count).
    """
    objects = scene.instances
    out = []
    for a, _ in enumerate(objects):
        names = _anchor_names(objects, a)
        if not names:
            continue
        rel_of = {i: relation(o.box, objects[a].box) for i, o in enumerate(objects) if i != a}
        for k, rel in enumerate(("above", "below", "next to")):
            anchor = names[(a + k) % len(names)]  # vary how anchors are named, deterministically
            hits = [i for i, r in rel_of.items() if r == rel]
            if len(hits) == 1:
                out.append(_make(objects, f"the shape {rel} the {anchor}", hits, "relation", [a]))
            for shape in dict.fromkeys(objects[i].shape for i in hits):
                same = [i for i in hits if objects[i].shape == shape]
                if len(same) == 1 and shape != objects[a].shape:
                    text = f"the {shape} {rel} the {anchor}"
                    out.append(_make(objects, text, same, "relation", [a]))
    return out


def attribute_queries(scene: Scene) -> list[Query]:
    """ "the object with the same colour as the ring" when exactly one other object matches."""
    objects = scene.instances
    out = []
    for a, anchor_obj in enumerate(objects):
        names = _anchor_names(objects, a)
        for attribute in ("colour", "shape"):
            value = getattr(anchor_obj, attribute)
            # naming the anchor by the very attribute asked about would give the answer away
            give_away = f"{value} shape" if attribute == "colour" else value
            usable = [n for n in names if n != give_away]
            others = [i for i, o in enumerate(objects) if i != a and getattr(o, attribute) == value]
            if len(others) == 1 and usable:
                text = f"the object with the same {attribute} as the {usable[0]}"
                out.append(_make(objects, text, others, "attribute", [a]))
    return out


def _clear_winner(
    values: Sequence[float], best: int, margin: Callable[[float, float], bool]
) -> bool:
    others = [v for i, v in enumerate(values) if i != best]
    return bool(others) and all(margin(values[best], v) for v in others)


def superlative_queries(scene: Scene) -> list[Query]:
    """Largest / smallest (visible area) and topmost / lowest (box centre) among candidates."""
    objects = scene.instances
    size = scene.label.shape[0]
    groups: list[tuple[str, list[int]]] = [("shape", list(range(len(objects))))]
    for shape in dict.fromkeys(o.shape for o in objects):
        groups.append((shape, [i for i, o in enumerate(objects) if o.shape == shape]))
    for colour in dict.fromkeys(o.colour for o in objects):
        groups.append((f"{colour} shape", [i for i, o in enumerate(objects) if o.colour == colour]))
    out = []
    for noun, members in groups:
        if len(members) < 2:
            continue
        areas = [float(objects[i].area) for i in members]
        centres = [(objects[i].box[1] + objects[i].box[3]) / 2.0 for i in members]
        tests = (
            ("largest", int(np.argmax(areas)), areas, lambda b, v: b >= AREA_MARGIN * v),
            ("smallest", int(np.argmin(areas)), areas, lambda b, v: v >= AREA_MARGIN * b),
            (
                "topmost",
                int(np.argmin(centres)),
                centres,
                lambda b, v: v - b >= HEIGHT_MARGIN * size,
            ),
            (
                "lowest",
                int(np.argmax(centres)),
                centres,
                lambda b, v: b - v >= HEIGHT_MARGIN * size,
            ),
        )
        for word, best, values, margin in tests:
            if _clear_winner(values, best, margin):
                target = members[best]
                mentioned = [i for i in members if i != target]
                out.append(_make(objects, f"the {word} {noun}", [target], "superlative", mentioned))
    return out


def count_queries(scene: Scene) -> list[Query]:
    """ "the two blue shapes", "the three circles": every object of a colour or shape."""
    objects = scene.instances
    out = []
    for attribute in ("colour", "shape"):
        for value in dict.fromkeys(getattr(o, attribute) for o in objects):
            members = [i for i, o in enumerate(objects) if getattr(o, attribute) == value]
            if len(members) not in COUNT_WORDS:
                continue
            if attribute == "shape" and len({objects[i].name for i in members}) == 1:
                continue  # "the two red stars" is the class query's target already
            word = COUNT_WORDS[len(members)]
            noun = f"{value} shapes" if attribute == "colour" else f"{value}s"
            out.append(_make(objects, f"the {word} {noun}", members, "count"))
    return out


GENERATORS: dict[str, Callable[[Scene], list[Query]]] = {
    "class": class_queries,
    "relation": relation_queries,
    "attribute": attribute_queries,
    "superlative": superlative_queries,
    "count": count_queries,
}


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple after checking each is one of ``QUERY_KINDS``."""
    bad = [k for k in kinds if k not in QUERY_KINDS]
    if bad or not kinds:
        raise ValueError(f"query kinds must be a non-empty subset of {QUERY_KINDS}, got {kinds}.")
    return tuple(kinds)


def scene_queries(scene: Scene, kinds: Sequence[str] = QUERY_KINDS) -> list[Query]:
    """Every unambiguous query of ``scene`` of the given kinds, kinds in ``kinds`` order.

    A phrase that two generators would both write (e.g. the same text from two anchors) appears
    once; all queries of a scene have distinct texts.
    """
    seen_texts: set[str] = set()
    out = []
    for kind in check_kinds(kinds):
        for query in GENERATORS[kind](scene):
            if query.text not in seen_texts:
                seen_texts.add(query.text)
                out.append(query)
    return out


def sample_queries(
    scene: Scene, count: int, rng: np.random.Generator, kinds: Sequence[str] = QUERY_KINDS
) -> list[Query]:
    """``count`` queries of ``scene``: kinds taken in turn (in an order drawn from ``rng``), a
    query of each drawn without repeats until its kind runs out; then every query again."""
    pools: dict[str, list[Query]] = {}
    for query in scene_queries(scene, kinds):
        pools.setdefault(query.kind, []).append(query)
    kinds_order = [list(pools)[i] for i in rng.permutation(len(pools))]
    queues = [[pools[k][i] for i in rng.permutation(len(pools[k]))] for k in kinds_order]
    unique: list[Query] = []
    for rank in range(max((len(q) for q in queues), default=0)):
        unique.extend(q[rank] for q in queues if rank < len(q))
    if not unique:
        return []
    return [unique[i % len(unique)] for i in range(count)]


def question_text(query: Query, template: str | None = None) -> str:
    """LISA's user message for ``query`` (without the ``<image>`` line the conversation puts
    before it): a short question wrapping a class name, a long one for a referring sentence
    (the first template of each unless one is given)."""
    if template is None:
        template = (SHORT_QUESTIONS if query.kind == "class" else LONG_QUESTIONS)[0]
    return template.format(phrase=query.text)


def answer_text(num_segments: int = 1, template: str = DEFAULT_ANSWER) -> str:
    """The assistant's answer: ``template`` for one mask, "Sure, they are [SEG] and [SEG]." for
    several (one ``[SEG]`` per target when targets are segmented one by one)."""
    if num_segments < 1:
        raise ValueError(f"an answer needs at least one [SEG], got {num_segments}.")
    if num_segments == 1:
        return template
    segs = [SEG_TOKEN] * num_segments
    return "Sure, they are " + ", ".join(segs[:-1]) + f" and {segs[-1]}."
