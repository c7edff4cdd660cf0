"""Missing preset weights on the command line: the override the error suggests really works."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import open_clip
import pytest
from PIL import Image

from ovseg.cli import main
from ovseg.model_zoo.embedded import EMBEDDED_WEIGHTS, WEIGHTS_DIR

TAG = "published-on-the-hub"


@pytest.fixture
def hub_only_tag(monkeypatch):
    """Pretend open_clip publishes the embedded CLIP under a hub tag that is not cached here."""
    real = open_clip.get_pretrained_cfg

    def get_pretrained_cfg(model, tag):
        if (model, tag) == ("ovseg-ViT-Ti-8", TAG):
            return {"hf_hub": "ovseg-test/ovseg-vit-ti-8/"}
        return real(model, tag)

    monkeypatch.setattr(open_clip, "get_pretrained_cfg", get_pretrained_cfg)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_suggested_checkpoint_override_is_accepted(hub_only_tag, tmp_path, capsys):
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)).save(image)
    argv = ["predict", str(image), "--vocab", "red circle,sand", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "a"), f"pipeline.backbone.pretrained={TAG}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    override = re.search(r"(pipeline\.backbone\.checkpoint=)DIR/(\S+?)\.?\s", err + " ")
    assert override is not None, err

    local = tmp_path / "downloaded"  # what `hf download ... --local-dir DIR` leaves
    local.mkdir()
    entry = EMBEDDED_WEIGHTS[("ovseg-ViT-Ti-8", "shapes")]
    shutil.copy(WEIGHTS_DIR / entry["file"], local / override.group(2))
    suggested = f"{override.group(1)}{local}/{override.group(2)}"
    out = tmp_path / "b"
    assert main([*argv, "--out", str(out), f"pipeline.backbone.pretrained={TAG}", suggested]) == 0
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0  # the embedded tag itself
    with_override = np.asarray(Image.open(out / "img_labels.png"))
    embedded = np.asarray(Image.open(tmp_path / "c" / "img_labels.png"))
    np.testing.assert_array_equal(with_override, embedded)  # the file given was the one used
    assert json.loads((out / "img.json").read_text())["source"] == "img.png"
