"""Pictures: colours per class name, enlarged overlays, legends, instance captions, heat maps."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from ovseg.io import read_image
from ovseg.structures import UNLABELLED, Instances, PointPrompts, ReferringResult
from ovseg.visualize import (
    COLOUR_TABLE,
    MIN_COLOUR_DISTANCE,
    POINT_COLOURS,
    blend_heat_map,
    class_colours,
    colour_slot,
    draw_instances,
    draw_mask,
    draw_points,
    enlarge_image,
    enlarge_nearest,
    heat_map,
    picture_scale,
    place_captions,
    referring_overlay,
    render_instances,
    render_semantic,
    srgb_to_oklab,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "demo" / "examples"
SCENES = ["shapes_scene", "synthetic_seed7_val0000", "synthetic_seed7_val0023"]


def vocabulary(stem: str) -> list[str]:
    lines = (EXAMPLES / f"{stem}.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def oklab_distance(a, b) -> float:
    return float(np.linalg.norm(srgb_to_oklab(a) - srgb_to_oklab(b)))


@pytest.fixture(scope="module")
def predictions(one_torch_thread):
    """Per example scene: (image, vocabulary, labels, reversed vocabulary, its labels)."""
    import ovseg

    seg = ovseg.create_pipeline("shapes-tiny")
    out = {}
    for stem in SCENES:
        image = read_image(EXAMPLES / f"{stem}.jpg")
        names = vocabulary(stem)
        seg.set_image(image)
        forward = seg.predict(names).sem_seg
        backward = seg.predict(names[::-1]).sem_seg
        out[stem] = (image, names, forward, names[::-1], backward)
    return out


# ----------------------------------------------------------------------------- colours
def test_oklab_of_known_colours():
    # reference values from Ottosson's OKLab definition (white, black, sRGB red)
    lab = srgb_to_oklab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]]))
    np.testing.assert_allclose(lab[0], [1.0, 0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(lab[2], [0.62796, 0.22486, 0.12585], atol=1e-4)


def test_colour_table_is_perceptually_spread():
    lab = srgb_to_oklab(COLOUR_TABLE)
    gaps = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    assert len(COLOUR_TABLE) == 128 and gaps.min() >= MIN_COLOUR_DISTANCE
    assert lab[:, 0].min() >= 0.5  # no dark colours (they vanish in a 50% blend)
    assert np.hypot(lab[:, 1], lab[:, 2]).min() >= 0.08  # no greys


def test_colour_slot_is_a_stable_hash_of_the_lower_cased_name():
    # pinned: a change here recolours every user's pictures (blake2b, not Python's hash)
    assert colour_slot("wall") == 49 and colour_slot("red star") == 73
    assert colour_slot(" Wall ") == colour_slot("WALL") == colour_slot("wall")


def test_colours_follow_names_not_their_order():
    names = [f"class {k}" for k in range(40)]
    colours = dict(zip(names, class_colours(names).tolist(), strict=True))
    rng = np.random.default_rng(0)
    for _ in range(5):
        shuffled = list(rng.permutation(names))
        again = dict(zip(shuffled, class_colours(shuffled).tolist(), strict=True))
        assert again == colours


def test_classes_drawn_together_are_apart_even_when_their_home_slots_collide():
    by_slot: dict[int, list[str]] = {}
    for k in itertools.count():
        name = f"thing {k}"
        by_slot.setdefault(colour_slot(name), []).append(name)
        if len(by_slot[colour_slot(name)]) == 2:
            first, second = sorted(by_slot[colour_slot(name)])
            break
    pair = class_colours([second, first])
    assert oklab_distance(pair[0], pair[1]) >= MIN_COLOUR_DISTANCE
    assert tuple(pair[1]) == tuple(COLOUR_TABLE[colour_slot(first)])  # name order keeps home
    alone = class_colours([second])[0]
    assert tuple(alone) == tuple(COLOUR_TABLE[colour_slot(second)])
    crowd = class_colours([f"label {k}" for k in range(128)])
    lab = srgb_to_oklab(crowd)
    gaps = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() >= MIN_COLOUR_DISTANCE  # 128 classes: all distinct table colours


# ----------------------------------------------------------------------------- example scenes
@pytest.mark.parametrize("stem", SCENES)
def test_example_overlays_are_enlarged_with_a_truthful_legend(predictions, stem):
    image, names, labels, _, _ = predictions[stem]
    scale = picture_scale(image.shape)
    picture = render_semantic(image, labels, names, scale=scale)
    drawn = picture.array
    assert scale == 4 and max(drawn.shape[:2]) >= 512 and drawn.shape[0] >= 4 * image.shape[0]
    labels_up = enlarge_nearest(labels, scale)
    present = [int(i) for i in np.unique(labels[labels != UNLABELLED])]
    assert sorted(item.index for item in picture.legend) == present and picture.more == 0
    areas = [item.area_fraction for item in picture.legend]
    assert areas == sorted(areas, reverse=True)  # largest first
    height, width = labels_up.shape
    for item in picture.legend:
        x0, y0, x1, y1 = item.swatch
        swatch = drawn[y0:y1, x0:x1].reshape(-1, 3)
        assert (swatch == item.shown).all()
        # the swatch is the mean of the overlay's pixels of that class; 1 level for the
        # rounding of a mean that lands on .5
        sampled = drawn[:height, :width][labels_up == item.index].astype(np.float64).mean(0)
        np.testing.assert_allclose(item.shown, sampled, atol=1.0)
    pure = [item.colour for item in picture.legend]
    for a, b in itertools.combinations(pure, 2):
        assert oklab_distance(a, b) >= MIN_COLOUR_DISTANCE


@pytest.mark.parametrize("stem", SCENES)
def test_a_class_keeps_its_colour_when_the_vocabulary_is_reordered(predictions, stem):
    image, names, labels, reverse, reverse_labels = predictions[stem]
    first = render_semantic(image, labels, names, scale=4)
    second = render_semantic(image, reverse_labels, reverse, scale=4)
    colours = {item.name: item.colour for item in first.legend}
    assert colours == {item.name: item.colour for item in second.legend}
    assert len(colours) >= 3
    # and the pixels of a class where both runs agree are drawn identically
    same = (
        np.asarray(names, dtype=object)[labels] == np.asarray(reverse, dtype=object)[reverse_labels]
    )
    same = enlarge_nearest(same & (labels != UNLABELLED), 4)
    size = same.shape
    np.testing.assert_array_equal(
        first.array[: size[0], : size[1]][same], second.array[: size[0], : size[1]][same]
    )


def test_side_by_side_puts_the_photo_first(predictions):
    image, names, labels, _, _ = predictions["shapes_scene"]
    alone = render_semantic(image, labels, names, scale=4, legend=False).array
    pair = render_semantic(image, labels, names, scale=4, side_by_side=True)
    np.testing.assert_array_equal(pair.array[:512, :512], enlarge_image(image, 4))
    x0, y0 = pair.overlay_origin
    assert x0 > 512
    np.testing.assert_array_equal(pair.array[y0 : y0 + 512, x0 : x0 + 512], alone)
    assert all(item.swatch[0] >= x0 + 512 for item in pair.legend)  # legend right of both


@pytest.mark.parametrize("stem", SCENES)
def test_example_instance_captions_are_inside_and_apart(predictions, stem):
    image, names, labels, _, _ = predictions[stem]
    present = [int(i) for i in np.unique(labels[labels != UNLABELLED])]
    masks = np.stack([labels == i for i in present])
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    instances = Instances(masks, boxes, np.linspace(0.9, 0.5, len(present)), present, names)
    picture = render_instances(image, instances, scale=picture_scale(image.shape))
    assert max(picture.array.shape[:2]) >= 512
    assert len(picture.captions) + picture.hidden == len(present)
    assert_captions_inside_and_apart(picture)


def assert_captions_inside_and_apart(picture):
    height, width = picture.array.shape[:2]
    for caption in picture.captions:
        x0, y0, x1, y1 = caption.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    for a, b in itertools.combinations([c.box for c in picture.captions], 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


# ----------------------------------------------------------------------------- legends
def test_a_long_legend_uses_two_columns_and_says_how_many_are_left_out():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    names = [f"class number {k}" for k in range(68)]
    labels = np.minimum(np.sqrt(rng.random((128, 128))) * 68, 67).astype(np.int64)
    picture = render_semantic(image, labels, names, scale=4)
    assert picture.more > 0 and len(picture.legend) + picture.more == 68
    columns = sorted({item.swatch[0] for item in picture.legend})
    assert len(columns) == 2
    counts = np.bincount(labels.ravel(), minlength=68)
    shares = [item.area_fraction for item in picture.legend]
    assert shares == sorted(shares, reverse=True)
    assert shares[-1] * labels.size >= np.sort(counts)[::-1][len(shares) - 1]  # top ones
    height, width = picture.array.shape[:2]
    assert height == 512  # the legend fits beside the picture
    for a, b in itertools.combinations([item.swatch for item in picture.legend], 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert all(s[2] <= width and s[3] <= height for s in (i.swatch for i in picture.legend))
    few = render_semantic(image, labels % 10, names[:10], scale=4)
    assert few.more == 0 and len({item.swatch[0] for item in few.legend}) == 1


def test_no_class_present_still_draws_a_legend():
    image = np.zeros((8, 8, 3), np.uint8)
    labels = np.full((8, 8), UNLABELLED, np.int64)
    picture = render_semantic(image, labels, ["a"], scale=picture_scale(image.shape))
    assert picture.legend == [] and picture.array.shape[0] >= 512


# ----------------------------------------------------------------------------- instances
def test_place_captions_tries_above_inside_below_and_never_overlaps():
    spots = place_captions([(40, 10)] * 4, [[10, 30, 60, 60]] * 4, 100, 100)
    assert spots == [(10, 20, 50, 30), (10, 30, 50, 40), (10, 60, 50, 70), (10, 50, 50, 60)]
    top_edge = place_captions([(40, 10)], [[80, 0, 100, 20]], 100, 100)
    assert top_edge == [(60, 0, 100, 10)]  # no room above: inside, shifted left to fit
    assert place_captions([(120, 10)], [[0, 0, 10, 10]], 100, 100) == [None]
    crowded = place_captions([(30, 10)] * 20, [[0, 40, 30, 50]] * 20, 100, 100)
    boxes = [s for s in crowded if s is not None]
    assert len(boxes) < 20 and len(boxes) == len(set(boxes))


def test_crowded_instances_get_captions_that_do_not_overlap():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    n = 25
    corners = rng.integers(0, 90, (n, 2))
    boxes = np.concatenate([corners, corners + rng.integers(4, 30, (n, 2))], 1)
    boxes = np.minimum(boxes, [128, 96, 128, 96])
    masks = np.zeros((n, 96, 128), bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, y1:y2, x1:x2] = True
    names = ["red star", "blue ring", "a very long class name that does not fit anywhere"]
    instances = Instances(masks, boxes, rng.random(n), rng.integers(0, 3, n), names)
    picture = render_instances(image, instances, scale=picture_scale(image.shape))
    assert picture.array.shape == (96 * 4, 128 * 4, 3)
    assert len(picture.captions) + picture.hidden == n and len(picture.captions) >= 10
    assert_captions_inside_and_apart(picture)
    scores = [instances.scores[c.index] for c in picture.captions]
    assert scores == sorted(scores, reverse=True)  # the best are captioned first


def test_instances_drawn_best_on_top_with_class_colours_and_contours():
    image = np.zeros((40, 60, 3), np.uint8)
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 20:30, 10:40] = True
    masks[1, 25:35, 30:50] = True
    instances = Instances(
        masks=masks,
        boxes=[[10, 20, 40, 30], [30, 25, 50, 35]],
        scores=[0.9, 0.4],
        labels=[0, 1],
        class_names=["cat", "dog"],
    )
    colours = class_colours(["cat", "dog"]).astype(np.float32)
    out = draw_instances(image, instances, boxes=False, labels=False)
    np.testing.assert_array_equal(out[27, 35], (0.5 * colours[0]).round())  # overlap: best
    np.testing.assert_array_equal(out[33, 45], (0.5 * colours[1]).round())
    np.testing.assert_array_equal(out[20, 20], colours[0])  # contour in the pure colour
    big = draw_instances(image, instances, boxes=True, labels=False, scale=2)
    assert big.shape == (80, 120, 3)
    np.testing.assert_array_equal(big[2 * 30 - 1, 2 * 25], colours[0])  # box's last pixel row
    framed = render_instances(image, instances, side_by_side=True, scale=2)
    x0 = framed.overlay_origin[0]
    assert framed.array.shape[1] == x0 + 120 and (framed.array[:, :120] == 0).all()
    assert len(framed.captions) == 2


# ----------------------------------------------------------------------------- the rest
def test_heat_map_colours_by_hand():
    # jet: r = 1.5 - |4v - 3|, g = 1.5 - |4v - 2|, b = 1.5 - |4v - 1|, clipped to [0, 1]
    colours = heat_map(np.array([[0.0, 0.5, 1.0]]))
    np.testing.assert_array_equal(colours[0], [[0, 0, 128], [128, 255, 128], [128, 0, 0]])
    blended = blend_heat_map(np.zeros((1, 3, 3), np.uint8), np.array([[0.0, 0.5, 1.0]]), 0.5)
    np.testing.assert_array_equal(blended[0, 0], [0, 0, 64])


def test_draw_mask_by_hand():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[True, False], [False, False]])
    out = draw_mask(image, mask, (200, 0, 50), 0.5)
    np.testing.assert_array_equal(out[0, 0], [150, 50, 75])
    np.testing.assert_array_equal(out[1, 1], [100, 100, 100])


def test_points_in_their_colours_at_any_scale():
    image = np.zeros((40, 40, 3), np.uint8)
    points = PointPrompts([[5.5, 5.5], [20.5, 20.5], [34.5, 10.5]], [1, 0, -1])
    out = draw_points(image, points, radius=3)
    np.testing.assert_array_equal(out[5, 5], POINT_COLOURS[1])
    np.testing.assert_array_equal(out[20, 20], POINT_COLOURS[0])
    np.testing.assert_array_equal(out[10, 34], POINT_COLOURS[-1])
    assert out[30, 5].sum() == 0
    big = draw_points(np.zeros((120, 120, 3), np.uint8), points, radius=3, scale=3)
    np.testing.assert_array_equal(big[61, 61], POINT_COLOURS[0])  # (20.5, 20.5) * 3


def test_referring_overlay_panels_and_enlarging():
    image = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:10] = True
    result = ReferringResult(
        mask=mask,
        score=0.8,
        phrase="the cat",
        similarity=np.linspace(0, 1, 600, dtype=np.float32).reshape(20, 30),
        points=PointPrompts([[7.5, 7.5]], [1]),
    )
    panel = referring_overlay(image, result)
    assert panel.shape[1] == 2 * 30 + 4 and panel.shape[0] > 20
    header = panel.shape[0] - 20
    big = referring_overlay(image, result, scale=4)
    assert big.shape == (80 + header, 4 * (2 * 30 + 4), 3)  # 120 px: text at its minimum size
    assert referring_overlay(image, result, scale=20).shape[0] - 400 > header  # larger text
    three = referring_overlay(image, result, scale=2, side_by_side=True)
    assert three.shape[1] == 3 * 60 + 2 * 8
    assert picture_scale((128, 128)) == 4 and picture_scale((600, 300)) == 1
    assert picture_scale((171, 50)) == 3 and picture_scale((256, 10)) == 2
