"""ADE20K-layout export read back with ovseg's ADE20K reader."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ovseg.data.ade20k import ADE20KDataset
from ovseg.errors import ConfigError
from ovseg.export import create_exporter
from ovseg.io import read_image
from ovseg.outputs import instance_id_map
from ovseg.structures import Instances

from .conftest import CLASSES, H, W


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "sub" / "a.png")
    Image.fromarray(pixels).save(folder / "b.bmp")
    return folder


def test_semantic_and_instances_read_back(tmp_path, source, semantic, instances):
    exporter = create_exporter("ade")
    exporter.start(tmp_path / "ade", CLASSES, source_root=source)
    exporter.add("sub/a.png", (H, W), semantic, key="sub/a")
    overlapping = Instances(
        np.concatenate([instances.masks, instances.masks[:1] | instances.masks[2:]]),
        np.concatenate([instances.boxes, instances.boxes[:1]]),
        [0.9, 0.8, 0.7, 0.95],
        [0, 1, 2, 1],
        CLASSES,
    )
    exporter.add("b.bmp", (H, W), overlapping)
    summary = exporter.finish()
    assert summary["images"] == 2

    dataset = ADE20KDataset(tmp_path / "ade", split="validation")
    assert dataset.class_names == CLASSES
    samples = {s["filename"].rsplit("/", 1)[-1]: s for s in (dataset[0], dataset[1])}
    assert sorted(samples) == ["b.png", "sub__a.png"]  # .bmp re-encoded for the reader
    assert np.array_equal(samples["sub__a.png"]["label"], semantic.sem_seg)
    ids = instance_id_map(overlapping).astype(np.int64)  # highest score on top
    expected = np.where(ids > 0, overlapping.labels[np.maximum(ids - 1, 0)], 255)
    assert np.array_equal(samples["b.png"]["label"], expected)
    assert np.array_equal(samples["b.png"]["image"], read_image(source / "b.bmp"))
    assert np.array_equal(samples["sub__a.png"]["image"], read_image(source / "sub" / "a.png"))


def test_too_many_classes_and_bad_split(tmp_path):
    with pytest.raises(ConfigError, match="at most 254"):
        create_exporter("ade").start(tmp_path / "ade", [f"c{i}" for i in range(255)])
    with pytest.raises(ConfigError):
        create_exporter("ade", split="test")
