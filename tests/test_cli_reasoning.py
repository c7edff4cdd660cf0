"""``ovseg predict --task reasoning``: a tiny READ release written by the test, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ovseg.cli import main
from tests.models.multimodal.read_tiny import write_tiny_release


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("read_cli"))


def _scene(path, size=(40, 56)):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_predict_writes_masks_overlay_and_answer(release, tmp_path, capsys):
    scene = _scene(tmp_path / "scene.png")
    out = tmp_path / "out"
    argv = ["predict", str(scene), "--preset", str(release["config"]), "--task", "reasoning"]
    argv += ["--prompt", "What is the largest object ? Please segment it .", "--out", str(out)]
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.yaml", "scene.json", "scene_mask_0.png", "scene_overlay.png"]
    summary = json.loads((out / "scene.json").read_text())
    assert summary["answer"] == "Sure [SEG] ." and summary["num_masks"] == 1
    assert summary["source"] == "scene.png" and summary["image_size"] == [40, 56]
    mask = np.asarray(Image.open(out / "scene_mask_0.png"))
    assert mask.shape == (40, 56) and set(np.unique(mask)) <= {0, 255}
    assert int((mask > 0).sum()) == summary["masks"][0]["area"]
    overlay = np.asarray(Image.open(out / "scene_overlay.png"))
    assert overlay.shape[0] > 40 and overlay.shape[2] == 3
    assert "Sure [SEG] ." in capsys.readouterr().out


def test_reasoning_needs_a_question(release, tmp_path, capsys):
    scene = _scene(tmp_path / "scene.png")
    argv = ["predict", str(scene), "--preset", str(release["config"]), "--task", "reasoning"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "--prompt" in capsys.readouterr().err
    argv += ["--prompt", "Which object ?", "--export", "coco", "--out", str(tmp_path / "b")]
    assert main(argv) == 2
    assert "--export" in capsys.readouterr().err
