"""Every aspect ratio gives a result: thin images are padded or their grids repeated."""

from __future__ import annotations

import numpy as np
import pytest

import ovseg

SIZES = [(1200, 8), (8, 1200), (1, 1)]


@pytest.fixture(scope="module")
def pipelines():
    return {
        task: ovseg.create_pipeline("shapes-tiny", task=task)
        for task in ("semantic", "referring", "referring_sasp", "instance", "instance_sam")
    }


@pytest.mark.parametrize("size", SIZES)
def test_every_task_answers_a_thin_image(pipelines, size):
    image = np.random.default_rng(0).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    semantic = pipelines["semantic"](image)
    assert semantic.sem_seg.shape == size
    found = pipelines["referring"](image, "red star")  # the detector's best box -> SAM
    assert found.mask.shape == size and found.similarity.shape == size
    found = pipelines["referring_sasp"](image, "red star")
    assert found.mask.shape == size and len(found.points) >= 1
    for task in ("instance", "instance_sam"):
        assert pipelines[task](image).masks.shape[1:] == size


def test_denseclip_answers_a_thin_image():
    seg = ovseg.create_pipeline("shapes-tiny-denseclip")
    image = np.random.default_rng(1).integers(0, 256, size=(1200, 8, 3), dtype=np.uint8)
    assert seg(image).sem_seg.shape == (1200, 8)
