"""Start-up stays light: ``import ovseg`` and the commands that only parse arguments, print help,
list presets or print a config import no torch, open_clip, torchvision, transformers or gradio.

Each case runs in a fresh interpreter under ``-X importtime`` (every module the process imports
is named on stderr), through the real ``python -m ovseg.cli`` entry point and its exit code.
Timings are not asserted here (``tools/benchmark_startup.py`` measures them).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import ovseg
from ovseg.config import list_presets, load_config, to_container
from ovseg.devices import DEVICE_TYPES, check_device
from ovseg.errors import ConfigError
from ovseg.model_zoo.embedded import EMBEDDED_WEIGHTS
from ovseg.models.backbones.clip_weights import _hf_repo_and_files
from ovseg.preset_status import CLIP_TAG_SOURCES

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "open_clip", "torchvision", "transformers", "gradio")


def _run(args: list[str], tmp_path: Path) -> tuple[int, set[str], str]:
    """Run ``python -X importtime ARGS`` in ``tmp_path`` with this checkout first on the path:
    (exit code, top-level modules imported, stdout and stderr without the import-time lines)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    modules, other = set(), []
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            if name != "imported package":  # the header line
                modules.add(name.split(".")[0])
        else:
            other.append(line)
    return done.returncode, modules, done.stdout + "\n".join(other)


def _heavy(modules: set[str], names=HEAVY) -> list[str]:
    return sorted(set(names) & modules)


def test_import_ovseg_imports_no_heavy_module(tmp_path):
    code, modules, err = _run(["-c", "import ovseg; print(ovseg.__version__)"], tmp_path)
    assert code == 0, err
    assert "ovseg" in modules  # the detector sees the package's own import
    assert _heavy(modules, (*HEAVY, "omegaconf", "numpy")) == []


def test_public_names_resolve_on_first_access(tmp_path):
    code, modules, err = _run(
        ["-c", "from ovseg import Vocabulary; print(Vocabulary.create('a, b').names)"], tmp_path
    )
    assert code == 0, err
    assert _heavy(modules) == []  # a vocabulary needs no torch until query_to_class
    assert set(ovseg.__all__) == set(ovseg._LAZY)
    assert set(ovseg.__all__) <= set(dir(ovseg))
    assert ovseg.create_pipeline is importlib.import_module("ovseg.api").create_pipeline
    assert ovseg.OVSegResult is importlib.import_module("ovseg.structures").OVSegResult
    for name in ovseg.__all__:
        assert getattr(ovseg, name) is not None
    assert ovseg.Vocabulary.create("a|b, c").query_to_class.tolist() == [0, 0, 1]
    with pytest.raises(AttributeError, match="no attribute 'create_pipelines'"):
        ovseg.create_pipelines  # noqa: B018


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    "argv, code, expect",
    [
        (["--help"], 0, "usage: ovseg COMMAND"),
        ([], 2, "usage: ovseg COMMAND"),
        (["list"], 0, "Presets by task"),
        (["list", "presets"], 0, "shapes-tiny"),
        (["config", "shapes-tiny"], 0, "pipeline:"),
        (["config", "shapes-tiny", "pipline.x=1"], 2, "Did you mean 'pipeline'"),
        (["config", "no-such-preset"], 2, "ovseg list presets"),
        (["bogus"], 2, "unknown command 'bogus'"),
        (["db"], 2, "usage: ovseg db"),
        (["predict"], 2, "the following arguments are required"),
        (["predict", "--help"], 0, "usage: ovseg predict"),
        (["predict", "IMG", "--task", "nope"], 2, "invalid choice"),
        (["predict", "IMG", "--vocab", "a", "--device", "gpu"], 2, "is not a device name"),
        (["predict", "IMG", "--vocab", "a", "--device", "cuda:01"], 2, "is not a device name"),
        (["predict", "IMG", "--vocab", "a", "--out", "IMG"], 2, "is a file; give a folder"),
        (["predict", "IMG", "--vocab", " , "], 2, "names no class"),
        (["predict", "missing.png", "--vocab", "a"], 2, "does not exist"),
        (["eval", "--device", "gpu"], 2, "is not a device name"),
    ],
)
def test_cli_answers_without_heavy_modules(argv, code, expect, image, tmp_path):
    argv = [str(image) if a == "IMG" else a for a in argv]
    returncode, modules, output = _run(["-m", "ovseg.cli", *argv], tmp_path)
    assert returncode == code, output
    assert expect in output and "Traceback" not in output
    assert _heavy(modules) == [], (argv, _heavy(modules))


def test_commands_that_need_models_still_import_them(tmp_path):
    """The detector is not blind: listing open_clip's models imports open_clip (and torch)."""
    code, modules, err = _run(["-m", "ovseg.cli", "list", "models"], tmp_path)
    assert code == 0, err
    assert {"open_clip", "torch"} <= modules


# ----------------------------------------------------------------------------- --device names
def test_device_types_are_torchs():
    """Every name the CLI accepts is one torch parses, and torch refuses the names it refuses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch deprecates 'mkldnn' as a device
        for name in sorted(DEVICE_TYPES):
            assert torch.device(name).type == name
            assert torch.device(f"{name}:0").index == 0
    for bad in ("gpu", "CUDA", "npu", "cuda:", "cuda:01", "cuda:-1", "cuda:1:2", " cpu", "cpu ",
                "", "cuda:1a", "privateuse1"):  # fmt: skip
        with pytest.raises(RuntimeError):
            torch.device(bad)
        with pytest.raises(ConfigError, match="is not a device name"):
            check_device(bad)


def test_cpu_devices_are_accepted_without_torch():
    for device in (None, "cpu", "cpu:0"):
        check_device(device)


# ----------------------------------------------------------------------------- ovseg list
def _clip_tags(node) -> set[tuple[str, str]]:
    found = set()
    if isinstance(node, dict):
        if node.get("type") in ("ClipBackbone", "ScClipBackbone") and node.get("pretrained"):
            if not node.get("checkpoint"):
                found.add((node.get("model_name"), node["pretrained"]))
        for value in node.values():
            found |= _clip_tags(value)
    elif isinstance(node, list):
        for value in node:
            found |= _clip_tags(value)
    return found


def test_clip_tag_table_matches_open_clip():
    """``ovseg list`` reads the presets' CLIP tags from a table: it must say what open_clip says."""
    for (model, tag), (repo, files) in CLIP_TAG_SOURCES.items():
        cfg = open_clip.get_pretrained_cfg(model, tag)
        assert cfg, f"open_clip no longer knows {model} / {tag}"
        assert _hf_repo_and_files(cfg) == (repo, list(files))


def test_every_shipped_clip_tag_is_in_the_table():
    """Else ``ovseg list`` would import open_clip to look the tag up."""
    tags = set()
    for name in list_presets():
        tags |= _clip_tags(to_container(load_config(name)))
    missing = {tag for tag in tags if tag not in EMBEDDED_WEIGHTS} - set(CLIP_TAG_SOURCES)
    assert not missing, f"add {sorted(missing)} to ovseg.preset_status.CLIP_TAG_SOURCES"
