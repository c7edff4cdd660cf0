"""The embedded default: packaged weights load (sha256 checked) and segment the synthetic world.

End-to-end quality on freshly generated held-out scenes (not the ones reported in README), with
bounds well below the measured values so that only a real regression fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ovseg
from ovseg.data.synthetic import SyntheticSceneDataset
from ovseg.errors import CheckpointError
from ovseg.evaluation.semseg import SemSegMetric
from ovseg.model_zoo import embedded
from ovseg.model_zoo.embedded import EMBEDDED_WEIGHTS, WEIGHTS_DIR, embedded_checkpoint

# README reports aAcc 87.6, seen mIoU 13.5, unseen 13.5 on 500 scenes; 24 scenes vary more.
AACC_BOUND = 70.0
SEEN_MIOU_BOUND = 6.0
DEMO = Path(__file__).resolve().parents[2] / "demo" / "examples"


@pytest.fixture(scope="module")
def shapes_tiny():
    return ovseg.create_pipeline("shapes-tiny")


def test_packaged_weights_match_their_sha256():
    entry = EMBEDDED_WEIGHTS[("ovseg-ViT-Ti-8", "shapes")]
    path = WEIGHTS_DIR / entry["file"]
    assert path.stat().st_size < 8 * 2**20  # the package stays small
    assert embedded_checkpoint("ovseg-ViT-Ti-8", "shapes") == path


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    entry = EMBEDDED_WEIGHTS[("ovseg-ViT-Ti-8", "shapes")]
    fake = tmp_path / entry["file"]
    fake.write_bytes((WEIGHTS_DIR / entry["file"]).read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(embedded, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(embedded, "_VERIFIED", set())
    with pytest.raises(CheckpointError, match="sha256"):
        embedded_checkpoint("ovseg-ViT-Ti-8", "shapes")


def test_default_preset_segments_held_out_scenes(shapes_tiny):
    data = SyntheticSceneDataset(num=24, seed=2024, split="val")
    metric = SemSegMetric(
        num_classes=len(data.class_names),
        class_names=data.class_names,
        groups={
            "seen": [c for c in data.class_names if c not in data.unseen],
            "unseen": data.unseen,
        },
    )
    for sample in data:
        metric.process(shapes_tiny(sample["image"]).sem_seg, sample["label"])
    results = metric.compute()
    chance = 100.0 / len(data.class_names)
    assert results["aAcc"] > AACC_BOUND
    assert results["groups"]["seen"]["mIoU"] > SEEN_MIOU_BOUND
    assert results["groups"]["unseen"]["mIoU"] > 2 * chance


def test_demo_scene_finds_its_classes(shapes_tiny):
    vocabulary = ovseg.Vocabulary.from_file(DEMO / "shapes_scene.txt")
    result = shapes_tiny(DEMO / "shapes_scene.jpg", vocabulary)
    areas = result.areas()
    assert (
        areas["water"] > 0.15 * result.sem_seg.size and areas["wall"] > 0.15 * result.sem_seg.size
    )
    assert np.isin(result.sem_seg, range(len(vocabulary))).all()


def test_export_is_byte_reproducible(tmp_path):
    import torch

    from ovseg.model_zoo.embedded import export_weights
    from ovseg.weights import load_state_dict, save_state_dict

    source = tmp_path / "trained.safetensors"
    save_state_dict(
        {"b.weight": torch.randn(3, 4), "a.bias": torch.randn(4), "n": torch.arange(3)}, source
    )
    first = export_weights(source, tmp_path / "one.safetensors")
    second = export_weights(source, tmp_path / "two.safetensors")
    assert first == second
    exported = load_state_dict(tmp_path / "one.safetensors")
    assert exported["b.weight"].dtype == torch.float16 and exported["n"].dtype == torch.int64
