"""MDETR post-processing on hand-made logits, against the reference formulas transcribed here
(``PostProcess``, ``PostProcessFlickr``, ``create_positive_map`` of ashkamath/mdetr)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ovseg.models.detectors.mdetr_postprocess import (
    object_scores,
    phrase_probabilities,
    pixel_boxes,
    positive_map,
)
from tests.models.detectors.tiny_mdetr import write_tiny_tokenizer


def test_object_score_is_one_minus_no_object_probability():
    logits = torch.tensor([[[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0]]])  # 3 tokens + no-object
    scores = object_scores(logits)
    first = 1 - 1 / (math.exp(2) + 3)  # softmax of the last column: 1 / (e^2 + 1 + 1 + 1)
    second = 1 - math.exp(5) / (math.exp(5) + 3)
    # float32: 1 - p cancels digits when p is near 1, so an absolute float32 tolerance
    np.testing.assert_allclose(scores.numpy(), [[first, second]], rtol=0, atol=1e-7)


def test_boxes_go_from_normalised_centres_to_pixel_corners():
    boxes = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.25, 0.75, 0.1, 0.2]])
    got = pixel_boxes(boxes, height=40, width=100)
    np.testing.assert_allclose(got.numpy(), [[0, 0, 100, 40], [20, 26, 30, 34]], atol=1e-5)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    import transformers

    folder = write_tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    return transformers.RobertaTokenizerFast.from_pretrained(folder)


def test_positive_map_marks_each_phrase_tokens(tokenizer):
    caption = "a cat. red car"
    encoding = tokenizer(caption)
    # one token per byte after <s>: "a" is token 1, "cat" tokens 3-5, "red car" tokens 8-14
    rows = positive_map(encoding, [(0, 1), (2, 5), (7, 14)], num_positions=20)
    assert rows.shape == (3, 20) and rows.dtype == torch.bool
    assert torch.nonzero(rows[0]).flatten().tolist() == [1]
    assert torch.nonzero(rows[1]).flatten().tolist() == [3, 4, 5]
    assert torch.nonzero(rows[2]).flatten().tolist() == list(range(8, 15))


def test_positive_map_steps_inwards_like_the_reference(tokenizer):
    """A span starting / ending on characters without a token moves one or two characters in
    (create_positive_map's fallbacks); a span of nothing but such characters stays empty."""

    class Gaps:  # characters 0 and 1 have no token; character c maps to token c otherwise
        def char_to_token(self, char):
            return None if char < 0 or char in (0, 1, 9, 10) else char

    rows = positive_map(Gaps(), [(0, 5), (3, 11), (0, 2), (9, 11)], num_positions=12)
    assert torch.nonzero(rows[0]).flatten().tolist() == [2, 3, 4]
    assert torch.nonzero(rows[1]).flatten().tolist() == [3, 4, 5, 6, 7, 8]
    assert not rows[2].any() and not rows[3].any()


def test_phrase_probabilities_sum_and_max():
    logits = torch.log(torch.tensor([[[0.1, 0.2, 0.3, 0.1, 0.3]]]))  # 4 tokens + no-object
    phrases = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    np.testing.assert_allclose(
        phrase_probabilities(logits, phrases, "sum").numpy(), [[[0.3, 0.4]]], rtol=1e-6
    )
    # PostProcessFlickr: max over the phrase's tokens of (positive map * probability)
    np.testing.assert_allclose(
        phrase_probabilities(logits, phrases, "max").numpy(), [[[0.2, 0.3]]], rtol=1e-6
    )
    wide = torch.zeros(2, 256, dtype=torch.bool)
    wide[:, :4] = phrases
    np.testing.assert_allclose(
        phrase_probabilities(logits, wide).numpy(), [[[0.3, 0.4]]], rtol=1e-6
    )
    with pytest.raises(ValueError, match="reduce"):
        phrase_probabilities(logits, phrases, "mean")
