"""``ovseg eval`` end to end: a tiny CLIP on a tiny synthetic ADE20K-layout set, 1 vs 2 processes."""

from __future__ import annotations

import json

import pytest
import yaml

from ovseg.cli import main
from ovseg.data.writers import write_synthetic_world
from tests.conftest import TINY_CONFIGS
from tests.torchrun import REPO_ROOT, run_torchrun


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    write_synthetic_world(
        root / "synth",
        num_train=0,
        num_val=5,
        seed=3,
        image_size=64,
        formats=("ade20k",),
        progress=False,
    )
    configs = root / "model_configs"
    configs.mkdir()
    (configs / "ovseg-test-vit.json").write_text(json.dumps(TINY_CONFIGS["ovseg-test-vit"]))
    cfg = {
        # registers the tiny architecture in every process, torchrun workers included
        "custom_model_configs": str(configs),
        "pipeline": {
            "type": "SemanticSegmenter",
            "backbone": {
                "type": "ClipBackbone",
                "model_name": "ovseg-test-vit",
                "templates": "photo",
                "dense_mode": "naclip",
            },
            "inference": {"mode": "slide", "crop_size": 32, "stride": 16},
        },
        "data": {
            "test": {"type": "ADE20KDataset", "root": str(root / "synth"), "split": "validation"}
        },
        "evaluation": {"groups": "auto", "progress": False},
        "seed": 0,
    }
    path = root / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return root, path


def test_eval_one_process_vs_torchrun(eval_setup, capsys):
    root, cfg = eval_setup
    assert main(["eval", str(cfg), "--work-dir", str(root / "one")]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "unseen" in printed and "Class" in printed
    one = json.loads((root / "one" / "results.json").read_text())
    assert one["num_images"] == 5 and set(one["groups"]) == {"seen", "unseen"}
    assert (root / "one" / "config.yaml").is_file()

    run_torchrun(
        REPO_ROOT / "tools" / "test.py", cfg, "--work-dir", root / "two", cwd=root, timeout=240
    )
    two = json.loads((root / "two" / "results.json").read_text())
    assert two == one


def test_eval_without_test_data_is_a_config_error(eval_setup, tmp_path, capsys):
    _, cfg = eval_setup
    assert main(["eval", str(cfg), "data=null", "--work-dir", str(tmp_path)]) == 2
    assert "data.test" in capsys.readouterr().err
