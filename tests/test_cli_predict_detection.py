"""``ovseg predict IMG --task detection``: COCO results JSON, overlay and summary; errors exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from ovseg.cli import main
from tests.models.detectors.tiny_detectors import write_tiny_owl

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_detection")
    owl = write_tiny_owl(root / "owl")
    config = {
        "pipelines": {
            "detection": {
                "type": "DetectionPipeline",
                "detector": {"type": "Owlv2Detector", "model": str(owl), "box_threshold": 0.3},
            }
        }
    }
    path = root / "tiny-owl.yaml"
    path.write_text(yaml.safe_dump(config))
    image = root / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), np.uint8)).save(image)
    return path, image


def test_predict_detection_writes_coco_results_and_overlay(preset, tmp_path, capsys):
    config, image = preset
    out = tmp_path / "out"
    args = ["predict", str(image), "--task", "detection", "--preset", str(config)]
    assert main([*args, "--vocab", "cat,dog|kitty", "--out", str(out)]) == 0
    assert "scene.png:" in capsys.readouterr().out
    summary = json.loads((out / "scene.json").read_text())
    coco = json.loads((out / "scene_coco.json").read_text())
    assert summary["source"] == "scene.png"
    assert summary["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert len(coco) == len(summary["detections"]) > 0
    for entry, detection in zip(coco, summary["detections"], strict=True):
        x1, y1, x2, y2 = detection["box_xyxy"]
        assert entry["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01)
        assert entry["category_id"] == detection["label"] + 1
        assert entry["score"] == pytest.approx(detection["score"], abs=1e-6)
        assert entry["score"] > 0.3
    picture = np.asarray(Image.open(out / "scene_detections.png"))
    assert picture.shape[2] == 3 and picture.shape[0] >= 40
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "scene.json",
        "scene_coco.json",
        "scene_detections.png",
    ]


def test_predict_detection_errors_exit_2(preset, tmp_path, capsys, monkeypatch):
    config, image = preset
    base = ["predict", str(image), "--task", "detection", "--out", str(tmp_path / "o")]
    assert main([*base, "--preset", str(config), "--vocab", "cat", "--export", "coco"]) == 2
    assert "--task detection" in capsys.readouterr().err
    assert main([*base, "--preset", str(config), "--vocab", " , "]) == 2
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    assert main([*base, "--preset", "owlv2-b16-sam-vith", "--vocab", "cat"]) == 2
    err = capsys.readouterr().err
    assert "huggingface.co/google/owlv2-base-patch16-ensemble" in err and "Traceback" not in err
