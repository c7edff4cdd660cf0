"""A small caption corpus and a randomised tiny CLIP, shared by the database and command tests."""

from __future__ import annotations

import pytest

from ovseg.models.backbones.clip import ClipBackbone
from tests.conftest import randomize_

WORDS = ["cat", "dog", "car", "tree", "boat", "lamp", "chair", "river", "cloud", "horse"]
CORPUS = [f"a {a} next to a {b} number {i}" for i, (a, b) in
          enumerate((a, b) for a in WORDS for b in WORDS)]  # fmt: skip


@pytest.fixture(scope="module")
def backbone(tiny_model_names, one_torch_thread):
    model = ClipBackbone(tiny_model_names["vit"], templates="photo")
    randomize_(model.model, seed=0)
    return model


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n")
    return path
