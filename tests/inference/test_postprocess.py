import math

import numpy as np
import pytest
import torch

from ovseg.errors import ConfigError, VocabularyError
from ovseg.inference.postprocess import labels_from_logits, reduce_synonyms, semantic_result
from ovseg.structures import UNLABELLED
from ovseg.vocab import Vocabulary


def test_reduce_synonyms_takes_max_over_each_class_queries():
    # queries: 0 -> class 1, 1 -> class 0, 2 -> class 1, 3 -> class 2
    logits = torch.tensor([[1.0, 5.0], [2.0, 0.0], [3.0, -1.0], [4.0, 4.0]]).view(1, 4, 1, 2)
    out = reduce_synonyms(logits, torch.tensor([1, 0, 1, 2]), num_classes=3)
    assert out.shape == (1, 3, 1, 2)
    expected = torch.tensor([[2.0, 0.0], [3.0, 5.0], [4.0, 4.0]]).view(1, 3, 1, 2)
    assert torch.equal(out, expected)


def test_reduce_synonyms_identity_mapping_returns_input_and_keeps_batch():
    logits = torch.randn(2, 3, 4, 5)
    out = reduce_synonyms(logits, torch.arange(3), num_classes=3)
    assert torch.equal(out, logits)


def test_reduce_synonyms_rejects_class_without_query():
    with pytest.raises(VocabularyError):
        reduce_synonyms(torch.zeros(1, 2, 1, 1), torch.tensor([0, 0]), num_classes=2)
    with pytest.raises(VocabularyError):
        reduce_synonyms(torch.zeros(1, 2, 1, 1), torch.tensor([0, 2]), num_classes=2)


def test_plain_argmax_and_softmax_probabilities():
    logits = torch.tensor([[[0.0, 2.0]], [[1.0, 0.0]]])  # C=2, H=1, W=2
    labels, probs = labels_from_logits(logits, background_index=None)
    assert labels.tolist() == [[1, 0]]
    assert labels.dtype == torch.int64
    e = math.e
    assert probs[:, 0, 0].tolist() == pytest.approx([1 / (1 + e), e / (1 + e)])
    assert torch.allclose(probs.sum(0), torch.ones(1, 2))


def test_prob_threshold_sends_unsure_pixels_to_background():
    # pixel 0: probs (0.2, 0.5, 0.3) -> max 0.5 >= 0.4 keeps class 1
    # pixel 1: probs (0.1, 0.35, 0.55) -> 0.55 keeps class 2
    # pixel 2: probs (0.3, 0.35, 0.35) -> 0.35 < 0.4 -> background 0
    p = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.35, 0.55], [0.3, 0.35, 0.35]]).T.reshape(3, 1, 3)
    labels, probs = labels_from_logits(p.log(), prob_threshold=0.4, background_index=0)
    assert labels.tolist() == [[1, 2, 0]]
    assert torch.allclose(probs, p, atol=1e-6)
    # a non-zero background index is honoured
    labels, _ = labels_from_logits(p.log(), prob_threshold=0.4, background_index=2)
    assert labels.tolist() == [[1, 2, 2]]


def test_softmax_runs_over_queries_before_synonym_max():
    # class 0 has two identical queries, class 1 one query. Reference order: softmax over the
    # 3 queries gives (1/3, 1/3, 1/3); class probs are (1/3, 1/3) -> below 0.4 -> background.
    # Merging logits first would give (1/2, 1/2) and keep the argmax.
    logits = torch.zeros(3, 1, 1)
    q2c = torch.tensor([0, 0, 1])
    labels, probs = labels_from_logits(
        logits, prob_threshold=0.4, background_index=0, query_to_class=q2c, num_classes=2
    )
    assert probs.shape == (2, 1, 1)
    assert probs.flatten().tolist() == pytest.approx([1 / 3, 1 / 3])
    assert labels.item() == 0
    # the highest synonym decides the class
    logits = torch.tensor([0.0, 3.0, 1.0]).view(3, 1, 1)
    labels, probs = labels_from_logits(logits, query_to_class=q2c, num_classes=2)
    z = 1 + math.exp(3) + math.e
    assert labels.item() == 0
    assert probs.flatten().tolist() == pytest.approx([math.exp(3) / z, math.e / z])


def test_area_threshold_suppresses_small_classes_then_thresholds():
    # 1x10 image, classes bg=0, 1, 2. Argmax: 1 pixel bg, 7 pixels class 1, 2 pixels class 2.
    # Non-background area = 9; with area 0.25 class 2 (2 <= 0.25*9 = 2.25) is dropped, class 1
    # (7 > 2.25) kept. Class-2 pixels then fall to their second best.
    big = 4.0
    cols = (
        [torch.tensor([big, 0.0, 0.0])]
        + [torch.tensor([0.0, big, 0.0])] * 7
        + [torch.tensor([0.0, 1.0, big])]  # second best: class 1
        + [torch.tensor([1.0, 0.0, big])]  # second best: background
    )
    logits = torch.stack(cols, dim=1).view(3, 1, 10)
    labels, probs = labels_from_logits(logits, area_threshold=0.25, background_index=0)
    assert labels.tolist() == [[0, 1, 1, 1, 1, 1, 1, 1, 1, 0]]
    assert torch.count_nonzero(probs[2]) == 0
    assert torch.all(probs[0] > 0) and torch.all(probs[1] > 0)
    # with the threshold below 2/9, class 2 survives
    labels, _ = labels_from_logits(logits, area_threshold=0.2, background_index=0)
    assert labels.tolist() == [[0, 1, 1, 1, 1, 1, 1, 1, 2, 2]]
    # suppression happens before the probability threshold: the demoted pixel 8 has
    # top prob softmax((0,1,4))[1] ~ 0.047 (class 2 zeroed) < 0.1 -> background
    labels, _ = labels_from_logits(
        logits, area_threshold=0.25, prob_threshold=0.1, background_index=0
    )
    assert labels.tolist() == [[0, 1, 1, 1, 1, 1, 1, 1, 0, 0]]


def test_area_threshold_never_drops_background():
    logits = torch.tensor([[5.0, 5.0, 5.0, 0.0], [0.0, 0.0, 0.0, 5.0]]).view(2, 1, 4)
    labels, probs = labels_from_logits(logits, area_threshold=0.9, background_index=0)
    # the only foreground class covers 100% of the foreground area -> kept
    assert labels.tolist() == [[0, 0, 0, 1]]
    assert torch.all(probs[0] > 0)


def test_bad_settings_raise_typed_errors():
    logits = torch.zeros(2, 1, 1)
    with pytest.raises(ConfigError):
        labels_from_logits(logits, prob_threshold=0.5, background_index=None)
    with pytest.raises(ConfigError):
        labels_from_logits(logits, background_index=2)
    with pytest.raises(ConfigError):
        labels_from_logits(logits, prob_threshold=1.5)
    with pytest.raises(ValueError):
        labels_from_logits(torch.zeros(1, 2, 1, 1))


def test_semantic_result_scores_each_pixel_with_its_labels_probability():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5) * 3
    vocab = Vocabulary.create(["red star", "blue ring", "sand"])
    result = semantic_result(
        logits, vocab, background_index=None, prob_threshold=0.6, area_threshold=0.0
    )
    probs = torch.softmax(logits, dim=0).numpy()
    unlabelled = result.sem_seg == UNLABELLED
    assert unlabelled.any() and not unlabelled.all()
    rows, cols = np.nonzero(~unlabelled)
    np.testing.assert_array_equal(
        result.label_scores[rows, cols], result.probs[result.sem_seg[rows, cols], rows, cols]
    )
    np.testing.assert_allclose(result.probs, probs, rtol=1e-6)
    assert (result.label_scores[unlabelled] == 0).all()
    assert result.sem_seg.dtype == np.int64 and result.label_scores.dtype == np.float32
