"""The ovseg command: list, config, predict end to end, data synth, typed errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from ovseg.cli import main
from tests.pipelines.test_semantic import tiny_config


@pytest.fixture
def tiny_yaml(tiny_model_names, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_model_names["vit"])))
    return path


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_folder_writes_outputs(tiny_yaml, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(image_folder),
            "--preset",
            str(tiny_yaml),
            "--vocab",
            "cat,dog|puppy",
            "--out",
            str(out),
            "pipeline.logit_scale=30",
        ]
    )
    assert code == 0
    for stem in ("a", "b"):
        labels = np.asarray(Image.open(out / f"{stem}_labels.png"))
        assert labels.shape == (40, 50) and labels.max() <= 1
        overlay = Image.open(out / f"{stem}_overlay.png")
        # the picture is enlarged 11x (50 px wide input, pictures >= 512 px), legend on the right
        assert overlay.height == 11 * 40 and overlay.width > 11 * 50
        summary = json.loads((out / f"{stem}.json").read_text())
        assert [c["name"] for c in summary["classes"]] == ["cat", "dog"]
        assert sum(c["area"] for c in summary["classes"]) == 40 * 50
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["pipeline"]["logit_scale"] == 30
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_predict_vocab_file(tiny_yaml, image_folder, tmp_path):
    vocab = tmp_path / "classes.txt"
    vocab.write_text("background, sky\ncat\n")
    code = main(
        [
            "predict",
            str(image_folder / "a.png"),
            "--preset",
            str(tiny_yaml),
            "--vocab-file",
            str(vocab),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "o" / "a.json").read_text())
    assert [c["name"] for c in summary["classes"]] == ["background", "cat"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "missing.png", "--vocab", "a"], "does not exist"),
        (["predict", "{img}", "--preset", "no-such-preset", "--vocab", "a"], "No preset"),
        (["predict", "{img}", "--preset", "{cfg}", "--vocab", "a,a"], "more than once"),
        (
            ["predict", "{img}", "--preset", "{cfg}", "--vocab", "a", "--vocab-file", "x"],
            "not both",
        ),
    ],
)
def test_errors_exit_2_with_message(args, message, tiny_yaml, image_folder, capsys, tmp_path):
    args = [a.format(img=image_folder / "a.png", cfg=tiny_yaml) for a in args]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_list_and_config(capsys):
    assert main(["list"]) == 0
    assert "sclip-vitb16-voc21" in capsys.readouterr().out
    assert main(["config", "naclip-vitb16-ade", "pipeline.logit_scale=12"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["pipeline"]["logit_scale"] == 12
    assert printed["pipeline"]["backbone"]["dense_mode"] == "naclip"
    assert main(["nonsense"]) == 2


def test_data_synth_small(tmp_path, capsys):
    code = main(
        [
            "data",
            "synth",
            "--out",
            str(tmp_path / "w"),
            "--num",
            "3",
            "--num-val",
            "2",
            "--formats",
            "ade20k",
            "--quiet",
        ]
    )
    assert code == 0
    root = tmp_path / "w" / "ADEChallengeData2016"
    assert len(list((root / "images" / "training").iterdir())) == 3
    assert len(list((root / "annotations" / "validation").iterdir())) == 2
    assert (
        json.loads((tmp_path / "w" / "synthetic_world.json").read_text())["neighbour_fraction"]
        == 0.0
    )
    args = ["data", "synth", "--out", str(tmp_path / "n"), "--num", "1", "--quiet"]
    assert main([*args, "--neighbour-fraction", "0.5", "--formats", "ade20k"]) == 0
    assert (
        json.loads((tmp_path / "n" / "synthetic_world.json").read_text())["neighbour_fraction"]
        == 0.5
    )
    capsys.readouterr()
    assert main([*args, "--neighbour-fraction", "2", "--overwrite"]) == 2
    assert "neighbour_fraction" in capsys.readouterr().err
