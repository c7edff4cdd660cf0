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
    "mdetr-r101-sam-vith": ("MdetrDetector", "mdetr_resnet101", 0.7),
    "mdetr-r101-refcoco-sam-vith": ("MdetrDetector", "mdetr_resnet101_refcoco", 0.7),
    "mdetr-r101-refcocoplus-sam-vith": ("MdetrDetector", "mdetr_resnet101_refcocoplus", 0.7),
    "mdetr-r101-refcocog-sam-vith": ("MdetrDetector", "mdetr_resnet101_refcocog", 0.7),
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


MDETR_PRESETS = sorted(name for name in EXPECTED if name.startswith("mdetr-"))


@pytest.mark.parametrize("name", MDETR_PRESETS)
def test_mdetr_preset_architecture_and_missing_weights(name, monkeypatch, tmp_path):
    """The preset's release builds (on the meta device: ~185M parameters, no memory) with the
    release's backbone, and its missing checkpoint is named with its zenodo address."""
    import torch

    from ovseg.errors import WeightsNotFoundError
    from ovseg.model_zoo.mdetr_release import MDETR_RELEASES, release_url
    from ovseg.models.detectors.mdetr import build_mdetr_model
    from ovseg.registry import DETECTORS

    detector = to_container(load_config(name))["pipelines"]["detection"]["detector"]
    release = MDETR_RELEASES[detector["model"]]
    with torch.device("meta"):
        model = build_mdetr_model({"backbone": release["backbone"]})
    assert model.arch.backbone == "resnet101" and model.arch.num_queries == 100
    assert 180e6 < sum(p.numel() for p in model.parameters()) < 190e6
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError) as info:
        DETECTORS.build(detector)
    message = str(info.value)
    assert release_url(detector["model"]) in message and release["file"] in message
    assert str(tmp_path / "hub" / "checkpoints") in message
