"""Synthetic scenes as detection samples: the scenes of `ovseg data synth`, seen classes in
training, the cache and the transform."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.data.synthetic import generate_scene, scene_rng
from ovseg.data.synthetic_detection import SyntheticDetectionDataset
from ovseg.data.synthetic_vocab import THING_CLASSES, UNSEEN_CLASSES
from ovseg.registry import DATASETS


def test_samples_are_the_generated_scenes_with_their_boxes():
    dataset = DATASETS.build({"type": "SyntheticDetectionDataset", "num": 3, "seed": 5,
                              "split": "val"})  # fmt: skip
    scene = generate_scene(scene_rng(5, "val", 2), split="val")
    sample = dataset[2]
    assert np.array_equal(sample["image"], scene.image)
    assert np.array_equal(sample["boxes"], scene.boxes) and sample["boxes"].dtype == np.float32
    assert np.array_equal(sample["class_ids"], scene.class_ids)
    assert dataset.class_names == list(THING_CLASSES) and dataset.unseen == list(UNSEEN_CLASSES)
    with pytest.raises(IndexError):
        dataset[3]
    with pytest.raises(ValueError, match="split"):
        SyntheticDetectionDataset(2, split="training")
    with pytest.raises(ValueError, match="positive"):
        SyntheticDetectionDataset(0)


def test_training_scenes_hold_seen_classes_only():
    dataset = SyntheticDetectionDataset(60, seed=0, split="train")
    names = {THING_CLASSES[c] for i in range(len(dataset)) for c in dataset[i]["class_ids"]}
    assert names and not names & set(UNSEEN_CLASSES)
    val = SyntheticDetectionDataset(60, seed=0, split="val")
    assert {THING_CLASSES[c] for i in range(60) for c in val[i]["class_ids"]} & set(UNSEEN_CLASSES)


def test_cache_and_transform():
    calls = []

    def transform(sample):
        calls.append(sample["filename"])
        return sample["boxes"].shape[0]

    dataset = SyntheticDetectionDataset(2, seed=1, cache=True, transform=transform)
    first = dataset.sample(1)
    assert dataset.sample(1) is first
    assert dataset[1] == len(first["boxes"]) and calls == ["synthetic_train_00000001"]
