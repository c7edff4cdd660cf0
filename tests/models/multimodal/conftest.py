"""Module-scoped tiny READ models (building one takes a moment on a busy CPU)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_read():
    """``(model, tokenizer)``: a random tiny READ model in eval mode (do not modify it)."""
    from tests.models.multimodal.read_tiny import tiny_read_model

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_read_model(seed=0)
    torch.set_num_threads(previous)
