"""Queries about synthetic scenes: each kind, unambiguity, groups, determinism, wording."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.data.reasoning_queries import (
    QUERY_KINDS,
    answer_text,
    attribute_queries,
    class_queries,
    count_queries,
    question_text,
    relation_queries,
    sample_queries,
    scene_queries,
    superlative_queries,
)
from ovseg.data.synthetic import Scene, SceneObject, generate_scene, scene_rng
from ovseg.data.synthetic_vocab import UNSEEN_CLASSES, thing_id

SIZE = 64


def _obj(colour: str, shape: str, x0: int, y0: int, side: int) -> SceneObject:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    box = (x0, y0, x0 + side, y0 + side)
    centre = (x0 + side / 2, y0 + side / 2)
    return SceneObject(
        thing_id(colour, shape), colour, shape, mask, box, centre, side, 0.0, side**2
    )


def _scene(*objects: SceneObject) -> Scene:
    label = np.zeros((SIZE, SIZE), dtype=np.int64)
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    return Scene(image=image, label=label, instances=list(objects), caption="")


def _texts(queries):
    return {q.text: q.targets for q in queries}


def test_class_queries_target_every_instance_of_the_class():
    scene = _scene(_obj("red", "star", 0, 0, 10), _obj("blue", "ring", 30, 0, 10),
                   _obj("red", "star", 0, 40, 10))  # fmt: skip
    assert _texts(class_queries(scene)) == {"red star": (0, 2), "blue ring": (1,)}


def test_relations_are_vertical_and_only_when_one_object_fits():
    # a red star on top, a blue ring and a green cross side by side below it
    scene = _scene(_obj("red", "star", 20, 0, 12), _obj("blue", "ring", 0, 40, 12),
                   _obj("green", "cross", 40, 40, 12))  # fmt: skip
    texts = _texts(relation_queries(scene))
    # anchors are named by class, shape or colour in turn (each names one object here)
    # two objects are below the star: no generic "the shape below ...", but each by its shape
    assert not any(t.startswith("the shape below") for t in texts)
    assert texts["the ring below the star"] == (1,)
    assert texts["the cross below the star"] == (2,)
    assert texts["the shape above the ring"] == (0,)
    assert texts["the shape next to the blue ring"] == (2,)
    assert not any(w in t for t in texts for w in ("left", "right"))


def test_anchor_must_be_unique_in_the_scene():
    # two red stars: "the red star" names no single anchor
    scene = _scene(_obj("red", "star", 0, 0, 10), _obj("red", "star", 40, 0, 10),
                   _obj("blue", "ring", 20, 40, 10))  # fmt: skip
    texts = _texts(relation_queries(scene))
    assert not any(t.endswith("the red star") for t in texts)
    assert "the shape above the blue ring" not in texts  # both stars are above it


def test_attribute_queries_need_exactly_one_match_and_do_not_give_the_answer_away():
    scene = _scene(_obj("red", "star", 0, 0, 10), _obj("red", "ring", 30, 0, 10),
                   _obj("blue", "ring", 0, 40, 10))  # fmt: skip
    texts = _texts(attribute_queries(scene))
    # the red ring is the only object of its kind, the star and the blue ring by class or shape
    assert texts == {
        "the object with the same colour as the red star": (1,),
        "the object with the same colour as the red ring": (0,),
        "the object with the same shape as the red ring": (2,),
        "the object with the same shape as the blue ring": (1,),
    }
    # never "... same colour as the red shape" (two red shapes, and it names the colour) nor
    # "... same shape as the ring" (two rings, and it names the shape)


def test_superlatives_need_a_clear_margin():
    big, small = _obj("red", "circle", 0, 0, 20), _obj("blue", "circle", 40, 40, 10)
    texts = _texts(superlative_queries(_scene(big, small)))
    assert texts["the largest circle"] == (0,) and texts["the smallest circle"] == (1,)
    assert texts["the topmost shape"] == (0,) and texts["the lowest shape"] == (1,)
    # 11 vs 10 px sides: areas within 25 %, centres 1.5 px apart: no superlative at all
    close = _scene(_obj("red", "circle", 0, 0, 11), _obj("blue", "circle", 40, 1, 10))
    assert superlative_queries(close) == []


def test_count_queries():
    scene = _scene(_obj("blue", "star", 0, 0, 8), _obj("blue", "ring", 20, 0, 8),
                   _obj("red", "ring", 40, 0, 8), _obj("red", "ring", 40, 40, 8))  # fmt: skip
    texts = _texts(count_queries(scene))
    assert texts["the two blue shapes"] == (0, 1)
    assert texts["the two red shapes"] == (2, 3)
    assert texts["the three rings"] == (1, 2, 3)
    assert "the two stars" not in texts


def test_groups_follow_unseen_classes_named_or_targeted():
    unseen = UNSEEN_CLASSES[0].split()  # e.g. red triangle
    scene = _scene(_obj(*unseen, 20, 0, 12), _obj("blue", "ring", 20, 40, 12))
    for query in scene_queries(scene):
        involved = {scene.instances[i].name for i in query.targets + query.mentioned}
        assert query.group == ("unseen" if UNSEEN_CLASSES[0] in involved else "seen")
    assert {q.group for q in scene_queries(scene)} == {"seen", "unseen"}


def test_generated_scenes_queries_are_unambiguous_and_deterministic():
    for index in range(20):
        scene = generate_scene(scene_rng(3, "val", index), image_size=64, split="val")
        queries = scene_queries(scene)
        again = scene_queries(
            generate_scene(scene_rng(3, "val", index), image_size=64, split="val")
        )
        assert [(q.text, q.targets) for q in queries] == [(q.text, q.targets) for q in again]
        assert len({q.text for q in queries}) == len(queries)
        for q in queries:
            assert q.kind in QUERY_KINDS and q.targets
            assert q.target_mask(scene).any()


def test_train_scenes_never_have_unseen_queries():
    for index in range(20):
        scene = generate_scene(scene_rng(0, "train", index), image_size=64, split="train")
        assert all(q.group == "seen" for q in scene_queries(scene))


def test_sample_queries_is_deterministic_and_spreads_over_kinds():
    scene = generate_scene(scene_rng(1, "val", 4), image_size=64, split="val", num_objects=4)
    first = sample_queries(scene, 5, np.random.default_rng(7))
    second = sample_queries(scene, 5, np.random.default_rng(7))
    assert [q.text for q in first] == [q.text for q in second] and len(first) == 5
    kinds_available = {q.kind for q in scene_queries(scene)}
    assert len({q.kind for q in first}) == min(5, len(kinds_available))
    with pytest.raises(ValueError, match="query kinds"):
        scene_queries(scene, ["colourful"])


def test_question_and_answer_wording():
    scene = _scene(_obj("red", "star", 20, 0, 12), _obj("blue", "ring", 20, 40, 12))
    query = class_queries(scene)[0]
    assert question_text(query) == "Can you segment the red star in this image?"
    assert answer_text(1) == "Sure, it is [SEG]."
    assert answer_text(3) == "Sure, they are [SEG], [SEG] and [SEG]."
    with pytest.raises(ValueError):
        answer_text(0)
