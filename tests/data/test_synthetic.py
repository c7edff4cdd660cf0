import time

import numpy as np
import pytest

from ovseg.data.phrasing import relation, scene_caption, with_article
from ovseg.data.synthetic import (
    CLASS_NAMES,
    SEEN_CLASSES,
    THING_CLASSES,
    UNSEEN_CLASSES,
    generate_scene,
    mask_box,
    scene_rng,
)
from ovseg.data.synthetic_vocab import (
    COLOURS,
    NUM_THINGS,
    PACKAGED_CLASS_FILE,
    SHAPES,
    STUFF_CLASSES,
    UNSEEN_IDS,
    class_file_text,
    split_thing,
    thing_id,
)
from ovseg.data.textures import TEXTURES, render_texture
from ovseg.registry import DATASETS


def test_vocabulary_order_and_split():
    assert len(CLASS_NAMES) == 68 == len(set(CLASS_NAMES))
    assert CLASS_NAMES[:64] == THING_CLASSES and CLASS_NAMES[64:] == STUFF_CLASSES
    assert CLASS_NAMES[thing_id("blue", "star")] == "blue star"
    assert split_thing(thing_id("pink", "ring")) == ("pink", "ring")
    # Latin square: every colour and every shape exactly once among the unseen.
    pairs = [split_thing(i) for i in UNSEEN_IDS]
    assert sorted(c for c, _ in pairs) == sorted(COLOURS)
    assert sorted(s for _, s in pairs) == sorted(SHAPES)
    assert set(SEEN_CLASSES).isdisjoint(UNSEEN_CLASSES)
    assert set(SEEN_CLASSES) | set(UNSEEN_CLASSES) == set(CLASS_NAMES)


def test_packaged_class_file_is_current():
    assert PACKAGED_CLASS_FILE.read_text(encoding="utf-8") == class_file_text()
    assert PACKAGED_CLASS_FILE.read_text(encoding="utf-8").splitlines() == list(CLASS_NAMES)


def test_generation_is_deterministic():
    a = generate_scene(scene_rng(5, "val", 7), split="val")
    b = generate_scene(scene_rng(5, "val", 7), split="val")
    c = generate_scene(scene_rng(5, "val", 8), split="val")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert a.caption == b.caption and a.stuff == b.stuff
    assert [o.box for o in a.instances] == [o.box for o in b.instances]
    assert not np.array_equal(a.image, c.image)
    # train and val streams of one seed differ
    assert not np.array_equal(generate_scene(scene_rng(5, "train", 7)).image, a.image)


@pytest.mark.parametrize("image_size", [128, 64])
def test_labels_masks_and_boxes_agree(image_size):
    for i in range(25):
        s = generate_scene(scene_rng(1, "val", i), split="val", image_size=image_size)
        assert s.image.shape == (image_size, image_size, 3) and s.image.dtype == np.uint8
        assert s.label.shape == (image_size, image_size) and s.label.dtype == np.int64
        assert 1 <= len(s.instances) <= 4
        masks = s.masks
        assert masks.sum(axis=0).max() <= 1, "visible masks must not overlap"
        assert np.array_equal(masks.any(axis=0), s.label < NUM_THINGS)
        for obj in s.instances:
            assert obj.area > 0 and np.all(s.label[obj.mask] == obj.class_id)
            assert obj.area >= 0.5 * obj.full_area
            x0, y0, x1, y1 = obj.box
            assert obj.box == mask_box(obj.mask)
            assert obj.mask[y0:y1, x0:x1].sum() == obj.area
            assert obj.mask[y0, x0:x1].any() and obj.mask[y1 - 1, x0:x1].any()
            assert obj.mask[y0:y1, x0].any() and obj.mask[y0:y1, x1 - 1].any()
        stuff_ids = set(np.unique(s.label[s.label >= NUM_THINGS]).tolist())
        assert {CLASS_NAMES[k] for k in stuff_ids} == set(s.stuff)
        assert s.boxes.shape == (len(s.instances), 4)
        assert s.class_ids.tolist() == [o.class_id for o in s.instances]


def test_train_scenes_never_show_unseen_and_val_scenes_do():
    unseen = set(UNSEEN_IDS)
    for i in range(150):
        s = generate_scene(scene_rng(0, "train", i), split="train")
        assert unseen.isdisjoint(np.unique(s.label).tolist())
        assert not any(name in s.caption for name in UNSEEN_CLASSES), s.caption
    objects = [
        o for i in range(150) for o in generate_scene(scene_rng(0, "val", i), split="val").instances
    ]
    fraction = np.mean([o.class_id in unseen for o in objects])
    assert 0.2 < fraction < 0.45
    assert {o.class_id for o in objects} >= unseen


def test_scenes_overlap_sometimes_and_objects_sizes_vary():
    scenes = [generate_scene(scene_rng(2, "train", i)) for i in range(80)]
    occluded = [o for s in scenes for o in s.instances if o.area < o.full_area]
    assert len(occluded) >= 5
    sizes = [o.size for s in scenes for o in s.instances]
    assert 22 <= min(sizes) < 30 and 50 < max(sizes) <= 60
    assert {len(s.instances) for s in scenes} == {1, 2, 3, 4}


def _touches(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two (H, W) bool masks share an edge (4-neighbourhood)."""
    grown = a.copy()
    grown[1:] |= a[:-1]
    grown[:-1] |= a[1:]
    grown[:, 1:] |= a[:, :-1]
    grown[:, :-1] |= a[:, 1:]
    return bool((grown & b).any())


def _same_colour_touching_pairs(scene) -> int:
    objects = scene.instances
    return sum(
        objects[i].colour == objects[j].colour
        and objects[i].shape != objects[j].shape
        and _touches(objects[i].mask, objects[j].mask)
        for i in range(len(objects))
        for j in range(i + 1, len(objects))
    )


def test_neighbour_fraction_places_same_coloured_shapes_against_each_other():
    plain = [generate_scene(scene_rng(4, "train", i)) for i in range(60)]
    paired = [generate_scene(scene_rng(4, "train", i), neighbour_fraction=0.5) for i in range(60)]
    # a fraction of 0 draws no extra random numbers: the scenes are the plain ones
    for i in range(5):
        again = generate_scene(scene_rng(4, "train", i), neighbour_fraction=0.0)
        assert np.array_equal(again.image, plain[i].image)
    plain_pairs = sum(_same_colour_touching_pairs(s) for s in plain)
    many = sum(_same_colour_touching_pairs(s) for s in paired)
    assert many >= 15 and many >= 4 * max(plain_pairs, 1), (plain_pairs, many)
    unseen = set(UNSEEN_IDS)
    for s in paired:  # training scenes stay seen-only and keep every object half visible
        assert unseen.isdisjoint(np.unique(s.label).tolist())
        assert all(o.area >= 0.5 * o.full_area for o in s.instances)
    val = [
        o
        for i in range(80)
        for o in generate_scene(scene_rng(4, "val", i), split="val", neighbour_fraction=1.0).instances
    ]
    assert any(o.class_id in unseen for o in val)


def test_captions_use_vertical_relations_only():
    assert relation((0, 0, 10, 10), (0, 40, 10, 50)) == "above"
    assert relation((0, 40, 10, 50), (0, 0, 10, 10)) == "below"
    assert relation((0, 0, 10, 10), (60, 2, 70, 12)) == "next to"
    assert (
        with_article("orange ring") == "an orange ring" and with_article("red star") == "a red star"
    )
    rng = np.random.default_rng(0)
    cap = scene_caption(["red star", "blue ring"], [(0, 0, 10, 10), (0, 40, 10, 50)], ["sand"], rng)
    assert "red star" in cap and "blue ring" in cap and cap.endswith("on sand")
    for i in range(60):
        s = generate_scene(scene_rng(4, "val", i), split="val")
        assert "left" not in s.caption and "right" not in s.caption
        assert all(o.name in s.caption for o in s.instances)
        assert all(name in s.caption for name in s.stuff)


def test_textures_are_textured_and_not_thing_colours():
    rng = np.random.default_rng(0)
    thing_rgb = np.array(list(COLOURS.values()), np.float32)
    for name in TEXTURES:
        tex = render_texture(name, rng, 64, 48)
        assert tex.shape == (64, 48, 3) and tex.dtype == np.float32
        assert tex.std(axis=(0, 1)).mean() > 3, f"{name} looks flat"
        mean = tex.reshape(-1, 3).mean(axis=0)
        assert np.abs(thing_rgb - mean).sum(axis=1).min() > 30, f"{name} equals a thing colour"
    with pytest.raises(ValueError, match="Unknown stuff"):
        render_texture("lava", rng, 8, 8)


def test_generation_is_fast():
    start = time.perf_counter()
    for i in range(50):
        generate_scene(scene_rng(0, "train", i))
    assert time.perf_counter() - start < 5.0  # ~4 ms a scene on one core


def test_bad_split_raises():
    with pytest.raises(ValueError, match="split"):
        generate_scene(np.random.default_rng(0), split="training")


def test_in_memory_dataset_is_registered():
    ds = DATASETS.build({"type": "SyntheticSceneDataset", "num": 3, "seed": 1, "split": "val"})
    item = ds[2]
    assert len(ds) == 3 and item["image"].shape == (128, 128, 3)
    assert np.array_equal(item["label"], generate_scene(scene_rng(1, "val", 2), split="val").label)
    assert ds.class_names == list(CLASS_NAMES) and ds.unseen == list(UNSEEN_CLASSES)
    with pytest.raises(IndexError):
        ds.scene(3)
