"""Shared fixtures: one small synthetic world written once per test session."""

from __future__ import annotations

import pytest

from ovseg.data.writers import write_synthetic_world

WORLD_SEED = 3
NUM_TRAIN = 6
NUM_VAL = 4


@pytest.fixture(scope="session")
def synthetic_world(tmp_path_factory):
    """(output dir, summary) of a world with 6 train and 4 val scenes in every format."""
    out = tmp_path_factory.mktemp("world")
    summary = write_synthetic_world(
        out, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=WORLD_SEED, crop_size=32, progress=False
    )
    return out, summary
