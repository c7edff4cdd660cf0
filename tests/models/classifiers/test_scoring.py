"""Mask embeddings to class probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.errors import ConfigError
from ovseg.models.classifiers import (
    class_probabilities,
    ensemble_probabilities,
    query_probabilities,
)
from ovseg.vocab import Vocabulary


def test_softmax_over_queries_then_synonym_max():
    vocab = Vocabulary.create(["cat", "dog|puppy"])
    embeds = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    text = torch.eye(3)  # cat, dog, puppy
    query = query_probabilities(embeds, text, logit_scale=2.0)
    e2 = np.exp(2.0)
    np.testing.assert_allclose(query[0], [e2 / (e2 + 2), 1 / (e2 + 2), 1 / (e2 + 2)], rtol=1e-6)
    probs = class_probabilities(query, vocab)
    np.testing.assert_allclose(probs[0], [e2 / (e2 + 2), 1 / (e2 + 2)], rtol=1e-6)
    np.testing.assert_allclose(probs[1], [1 / (e2 + 2), e2 / (e2 + 2)], rtol=1e-6)


def test_geometric_ensemble_by_hand():
    pooled = torch.tensor([[0.8, 0.2]])
    cropped = torch.tensor([[0.2, 0.8]])
    out = ensemble_probabilities(pooled, cropped, 0.25)
    a, b = 0.8**0.75 * 0.2**0.25, 0.2**0.75 * 0.8**0.25
    np.testing.assert_allclose(out, [[a / (a + b), b / (a + b)]], rtol=1e-6)
    assert ensemble_probabilities(pooled, cropped, 0.0) is pooled
    with pytest.raises(ConfigError):
        ensemble_probabilities(pooled, cropped, 1.5)
