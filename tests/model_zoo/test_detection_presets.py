"""The detector + SAM presets: a detection pipeline and detector-proposal instances."""

from __future__ import annotations

import pytest

from ovseg.config import load_config, to_container

EXPECTED = {
    "owlv2-b16-sam-vith": ("Owlv2Detector", "google/owlv2-base-patch16-ensemble", 0.1),
    "grounding-dino-t-sam-vith": (
        "GroundingDinoDetector",
        "IDEA-Research/grounding-dino-tiny",
        0.25,
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detection_preset_schema(name):
    cfg = to_container(load_config(name))
    kind, repo, threshold = EXPECTED[name]
    assert "pipeline" not in cfg and "vocabulary" not in cfg  # the vocabulary is the user's
    detection, instance = cfg["pipelines"]["detection"], cfg["pipelines"]["instance"]
    assert detection["type"] == "DetectionPipeline"
    assert detection["detector"] == {"type": kind, "model": repo, "box_threshold": threshold}
    assert instance["type"] == "InstanceSegmenter" and instance["proposals"] == "detector"
    assert instance["backbone"] is None
    assert instance["detector"] == detection["detector"]  # interpolated, one source of truth
    assert instance["decoder"] == {"type": "SamDecoder", "model_type": "vit_h"}
