"""SyntheticReasoningDataset: item layout, determinism, multi-target modes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.data.synthetic import SyntheticSceneDataset
from ovseg.data.synthetic_reasoning import SyntheticReasoningDataset
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS


def test_items_hold_the_scene_and_its_queries():
    data = SyntheticReasoningDataset(num=4, seed=2, split="val", image_size=64, queries_per_scene=3)
    item = data[1]
    scenes = SyntheticSceneDataset(num=4, seed=2, split="val", image_size=64)
    np.testing.assert_array_equal(item["image"], scenes[1]["image"])
    assert item["image"].dtype == np.uint8 and item["image"].shape == (64, 64, 3)
    assert len(item["queries"]) == 3
    for q in item["queries"]:
        assert "<image>" not in q["question"] and q["text"] in q["question"]
        assert q["answer"] == "Sure, it is [SEG]."
        assert q["masks"].dtype == bool and q["masks"].shape == (1, 64, 64) and q["masks"].any()
        assert q["group"] in ("seen", "unseen")


def test_deterministic_by_seed_and_different_across_seeds():
    a = SyntheticReasoningDataset(num=3, seed=5, image_size=64)[2]
    b = SyntheticReasoningDataset(num=3, seed=5, image_size=64)[2]
    c = SyntheticReasoningDataset(num=3, seed=6, image_size=64)[2]
    assert [q["question"] for q in a["queries"]] == [q["question"] for q in b["queries"]]
    np.testing.assert_array_equal(a["queries"][0]["masks"], b["queries"][0]["masks"])
    assert not np.array_equal(a["image"], c["image"])


def test_evaluation_mode_lists_every_query_and_per_object_masks():
    union = SyntheticReasoningDataset(num=30, seed=0, split="val", image_size=64,
                                      queries_per_scene=None, kinds=["count"])  # fmt: skip
    split = SyntheticReasoningDataset(num=30, seed=0, split="val", image_size=64,
                                      queries_per_scene=None, kinds=["count"],
                                      multi_target="per_object")  # fmt: skip
    found = 0
    for index in range(30):
        for qu, qs in zip(union[index]["queries"], split[index]["queries"]):
            n = len(qs["masks"])
            assert n >= 2 and qs["answer"].count("[SEG]") == n
            np.testing.assert_array_equal(qu["masks"][0], qs["masks"].any(axis=0))
            found += 1
    assert found > 0


def test_query_samples_are_flat_tuples():
    data = SyntheticReasoningDataset(num=2, image_size=64, queries_per_scene=2,
                                     transform=lambda item: "transformed")  # fmt: skip
    assert data[0] == "transformed"
    samples = data.query_samples(0)
    image, question, answer, masks, meta = samples[0]
    assert len(samples) == 2 and image.shape == (64, 64, 3)
    assert "[SEG]" in answer and masks.ndim == 3 and set(meta) >= {"kind", "group", "text"}


def test_registered_and_bad_settings_are_dataset_errors():
    built = DATASETS.build({"type": "SyntheticReasoningDataset", "num": 1, "image_size": 64})
    assert len(built) == 1
    for bad in ({"split": "dev"}, {"multi_target": "all"}, {"wording": "odd"},
                {"queries_per_scene": 0}, {"kinds": ["colourful"]}):  # fmt: skip
        with pytest.raises(DatasetError):
            SyntheticReasoningDataset(**bad)
