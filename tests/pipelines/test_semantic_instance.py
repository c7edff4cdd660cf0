"""SemanticInstanceSegmenter: a semantic map's thing regions as instances, redrawn by SAM."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ovseg.errors import ConfigError, PromptError
from ovseg.models.classifiers import mask_iou, matched_mask_iou
from ovseg.pipelines.base import EncodedImage
from ovseg.pipelines.semantic_instance import (
    SemanticInstanceSegmenter,
    connected_regions,
    majority_class,
)
from ovseg.structures import OVSegResult, PointPrompts


def test_connected_regions_split_each_class_and_average_its_scores():
    sem_seg = np.array(
        [
            [1, 1, 0, 0, 2],
            [1, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 0, 0, 1],
        ]
    )
    scores = np.linspace(0.0, 1.0, sem_seg.size, dtype=np.float32).reshape(sem_seg.shape)
    masks, labels, means = connected_regions(sem_seg, scores, [1, 2], connectivity=8)
    # class 1: the 2x2 block joined diagonally to (2, 2); the lone corner pixel; then class 2
    assert labels.tolist() == [1, 1, 2]
    assert masks[0].sum() == 5 and masks[0][2, 2] and masks[1][3, 4] and masks[2][0, 4]
    np.testing.assert_allclose(means[0], scores[masks[0]].mean(), rtol=1e-6)
    np.testing.assert_allclose(means[1], scores[3, 4], rtol=1e-6)
    four, labels4, _ = connected_regions(sem_seg, scores, [1], connectivity=4)
    assert labels4.tolist() == [1, 1, 1] and sorted(m.sum() for m in four) == [1, 1, 4]
    big, labels_big, _ = connected_regions(sem_seg, None, [1, 2], min_area=2)
    assert labels_big.tolist() == [1] and big.shape == (1, 4, 5)
    empty, no_labels, no_scores = connected_regions(sem_seg, None, [7])
    assert empty.shape == (0, 4, 5) and len(no_labels) == len(no_scores) == 0
    with pytest.raises(ConfigError, match="connectivity"):
        connected_regions(sem_seg, None, [1], connectivity=6)
    # limit: the best-scored regions only, in the same order
    best_two, labels_two, scores_two = connected_regions(sem_seg, scores, [1, 2], limit=2)
    assert labels_two.tolist() == [1, 1] and len(best_two) == 2
    np.testing.assert_array_equal(best_two, masks[:2])  # class 2's region scores lowest
    np.testing.assert_allclose(scores_two, means[:2])
    assert len(connected_regions(sem_seg, scores, [1, 2], limit=0)[0]) == 0


def test_matched_mask_iou_pairs_masks_by_index():
    first = torch.zeros(3, 2, 2, dtype=torch.bool)
    second = torch.zeros(3, 2, 2, dtype=torch.bool)
    first[0, 0] = True
    second[0, :, 0] = True  # overlap 1 of union 3
    first[1] = second[1] = True
    np.testing.assert_allclose(matched_mask_iou(first, second).numpy(), [1 / 3, 1.0, 0.0])
    np.testing.assert_allclose(
        matched_mask_iou(first, second).numpy(), mask_iou(first, second).diagonal().numpy()
    )


class _FakeSemantic:
    """Labels a fixed map (vocabulary indices) with probability 0.8 everywhere."""

    def __init__(self, sem_seg):
        self.sem_seg = np.asarray(sem_seg, dtype=np.int64)
        self.vocabularies = []

    def encode_batch(self, images):
        return [EncodedImage(image=image) for image in images]

    def predict(self, encoded, vocab):
        self.vocabularies.append(list(vocab.names))
        return OVSegResult(
            sem_seg=self.sem_seg,
            class_names=list(vocab.names),
            label_scores=np.full(self.sem_seg.shape, 0.8, dtype=np.float32),
        )


class _FakeDecoder:
    """SAM stand-in: the mask of a box prompt is the box grown by ``grow`` pixels, IoU 0.5."""

    def __init__(self, grow=0):
        self.grow = grow
        self.boxes = []

    def embed_batch(self, arrays):
        return [SimpleNamespace(size=array.shape[:2]) for array in arrays]

    def predict(self, boxes=None, multimask=False, embedding=None, **points):
        height, width = embedding.size
        if boxes is None:  # a click prompt: the 2x2 block at the first click, IoU 0.9
            x, y = np.asarray(points["point_coords"])[0, 0].astype(int)
            mask = np.zeros((height, width), dtype=bool)
            mask[y : y + 2, x : x + 2] = True
            return SimpleNamespace(best=lambda: (mask, 0.9, 0))
        assert multimask is False
        self.boxes.append(np.asarray(boxes))
        masks = torch.zeros(len(boxes), 1, height, width, dtype=torch.bool)
        for index, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=int)):
            g = self.grow
            masks[index, 0, max(0, y1 - g) : y2 + g, max(0, x1 - g) : x2 + g] = True
        return SimpleNamespace(masks=masks, iou_scores=torch.full((len(boxes), 1), 0.5))


# vocabulary ["red star", "blue ring"] + stuff "wall" (index 2): a star of two regions, a ring
SCENE = np.array(
    [
        [0, 0, 2, 2, 2, 2],
        [0, 0, 2, 1, 1, 2],
        [2, 2, 2, 1, 1, 2],
        [2, 2, 2, 2, 2, 2],
        [2, 2, 2, 2, 0, 2],
    ]
)


def test_regions_of_the_thing_classes_become_instances_and_stuff_is_queried():
    semantic = _FakeSemantic(SCENE)
    pipeline = SemanticInstanceSegmenter(
        semantic, stuff=["wall"], postprocess={"min_area": 1, "nms_threshold": 0.5}
    )
    image = np.zeros((5, 6, 3), dtype=np.uint8)
    found = pipeline(image, ["red star", "blue ring"])
    assert semantic.vocabularies == [["red star", "blue ring", "wall"]]
    assert found.class_names == ["red star", "blue ring"]
    assert sorted(found.labels.tolist()) == [0, 0, 1]
    assert found.masks.shape == (3, 5, 6) and found.masks.sum() == 4 + 4 + 1
    np.testing.assert_allclose(found.scores, 0.8)
    ring = found.masks[found.labels.tolist().index(1)]
    np.testing.assert_array_equal(found.boxes[found.labels.tolist().index(1)], [3, 1, 5, 3])
    assert ring[1:3, 3:5].all()
    # per call: the one-pixel region goes with min_area 2; nothing scores 0.9
    assert len(pipeline.predict(pipeline.encode(image), ["red star", "blue ring"], min_area=2)) == 2
    assert len(pipeline(image, ["red star", "blue ring"], score_threshold=0.9)) == 0
    # a vocabulary that names the stuff itself: no instance of it, and it is not queried twice
    with_wall = pipeline(image, ["wall", "red star", "blue ring"])
    assert semantic.vocabularies[-1] == ["wall", "red star", "blue ring"]
    assert 0 not in with_wall.labels.tolist()


def test_sam_redraws_the_regions_and_its_iou_joins_the_score():
    decoder = _FakeDecoder(grow=1)
    pipeline = SemanticInstanceSegmenter(
        _FakeSemantic(SCENE),
        decoder=decoder,
        stuff=["wall"],
        postprocess={"min_area": 1, "min_agreement": 0.1},
    )
    found = pipeline(np.zeros((5, 6, 3), dtype=np.uint8), ["red star", "blue ring"])
    np.testing.assert_array_equal(
        np.sort(decoder.boxes[0], axis=0),
        np.sort([[0, 0, 2, 2], [4, 4, 5, 5], [3, 1, 5, 3]], axis=0),
    )
    ring = found.masks[found.labels.tolist().index(1)]
    assert ring.sum() == 16 and ring[0:4, 2:6].all()  # the box grown by one pixel: IoU 4/16
    np.testing.assert_allclose(sorted(found.scores), [0.4, 0.4, 0.4])
    strict = SemanticInstanceSegmenter(
        _FakeSemantic(SCENE),
        decoder=_FakeDecoder(grow=1),
        stuff=["wall"],
        postprocess={"min_area": 1, "min_agreement": 0.3},
    )
    kept = strict(np.zeros((5, 6, 3), dtype=np.uint8), ["red star", "blue ring"])
    ring = kept.masks[kept.labels.tolist().index(1)]
    assert ring.sum() == 4  # SAM's mask disagrees (IoU 0.25): the region stays, scored as it was
    assert np.isclose(kept.scores[kept.labels.tolist().index(1)], 0.8)


def test_one_object_named_twice_keeps_its_better_name_across_classes():
    # two regions of different classes inside one object: SAM redraws both as the same mask
    scene = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    semantic = _FakeSemantic(scene)

    def build(cross):
        return SemanticInstanceSegmenter(
            semantic,
            decoder=_FakeDecoder(grow=4),
            stuff=["wall"],
            postprocess={"min_area": 1, "min_agreement": 0.0, "cross_class_iou": cross},
        )

    image = np.zeros((3, 4, 3), dtype=np.uint8)
    assert len(build(None)(image, ["red star", "red diamond"])) == 2
    once = build(0.7)(image, ["red star", "red diamond"])
    assert len(once) == 1 and once.labels.tolist() == [0]  # equal scores: the first kept


def test_bad_settings_are_config_errors():
    semantic = _FakeSemantic(SCENE)
    with pytest.raises(ConfigError, match="semantic must be a pipeline"):
        SemanticInstanceSegmenter(object())
    with pytest.raises(ConfigError, match="stuff must list"):
        SemanticInstanceSegmenter(semantic, stuff="wall")
    with pytest.raises(ConfigError, match="Unknown postprocess keys"):
        SemanticInstanceSegmenter(semantic, postprocess={"min_areas": 3})
    with pytest.raises(ConfigError, match="connectivity"):
        SemanticInstanceSegmenter(semantic, postprocess={"connectivity": 6})
    with pytest.raises(ConfigError, match="cross_class_iou"):
        SemanticInstanceSegmenter(semantic, postprocess={"cross_class_iou": 1.5})
    with pytest.raises(ConfigError, match="unknown|Unknown"):
        SemanticInstanceSegmenter(semantic)(np.zeros((5, 6, 3), np.uint8), ["a"], bogus=1)


def test_majority_class_counts_only_the_vocabulary():
    sem_seg = np.array([[0, 1, 1], [2, 2, 2]])
    scores = np.array([[0.5, 0.6, 0.8], [0.9, 0.9, 0.9]])
    mask = np.ones((2, 3), dtype=bool)
    label, mass = majority_class(sem_seg, scores, mask, num_classes=2)  # class 2 not counted
    assert label == 1 and np.isclose(mass, (0.6 + 0.8) / 6)
    assert majority_class(sem_seg, None, mask, num_classes=3) == (2, 0.5)
    assert majority_class(sem_seg, None, np.zeros((2, 3), bool), num_classes=3) == (0, 0.0)


def test_clicks_are_named_by_the_map_under_sams_mask():
    pipeline = SemanticInstanceSegmenter(
        _FakeSemantic(SCENE), decoder=_FakeDecoder(), stuff=["wall"]
    )
    encoded = pipeline.encode(np.zeros((5, 6, 3), dtype=np.uint8))
    clicked = pipeline.segment_clicks(
        encoded, PointPrompts([[3.5, 1.5]], [1]), ["red star", "blue ring"]
    )
    assert len(clicked) == 1 and clicked.labels.tolist() == [1]
    assert clicked.masks[0, 1:3, 3:5].all() and clicked.masks.sum() == 4
    np.testing.assert_allclose(clicked.scores, [0.8 * 0.9], rtol=1e-6)
    # after set_image: (points, vocabulary=...)
    pipeline.set_image(np.zeros((5, 6, 3), dtype=np.uint8))
    again = pipeline.segment_clicks(PointPrompts([[0.5, 0.5]], [1]), vocabulary=["red star"])
    assert again.labels.tolist() == [0]
    with pytest.raises(PromptError, match="at least one click"):
        pipeline.segment_clicks(encoded, PointPrompts(np.zeros((0, 2)), []), ["red star"])
    with pytest.raises(ConfigError, match="needs a SAM decoder"):
        SemanticInstanceSegmenter(_FakeSemantic(SCENE)).segment_clicks(
            encoded, PointPrompts([[1, 1]], [1]), ["red star"]
        )
