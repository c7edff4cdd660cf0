"""Engine tests run tiny models on a shared CPU: one intra-op thread avoids thread contention."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _single_thread(one_torch_thread):
    yield
