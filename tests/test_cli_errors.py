"""Usage errors of ``ovseg predict`` / ``ovseg config``: exit code 2, one line on stderr, no model
built (each check runs before the preset's weights are loaded)."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

import ovseg.api
from ovseg.cli import main


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(path)
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a pipeline would be built: every check must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the argument check")

    monkeypatch.setattr(ovseg.api, "create_pipeline", refuse)


def _usage_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovseg: error: "), err
    return lines[0]


def test_out_that_is_a_file(image, tmp_path, capsys, no_model):
    target = tmp_path / "taken"
    target.write_text("x")
    line = _usage_error(["predict", str(image), "--vocab", "a", "--out", str(target)], capsys)
    assert "is a file; give a folder" in line
    assert target.read_text() == "x"


def test_out_that_cannot_be_reached(image, tmp_path, capsys, no_model):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub"
    line = _usage_error(["predict", str(image), "--vocab", "a", "--out", str(out)], capsys)
    assert "cannot be used as the output folder" in line and "write to" in line


def test_out_that_is_read_only(image, tmp_path, capsys, no_model, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes through permission bits: make the write fail as it would
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and os.path.samefile(dir, folder):
                raise PermissionError(13, "Permission denied")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    try:
        line = _usage_error(["predict", str(image), "--vocab", "a", "--out", str(folder)], capsys)
    finally:
        folder.chmod(0o755)
    assert "Permission denied" in line and "cannot be used as the output folder" in line
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    "device, message",
    [("bogus", "is not a device name"), ("cuda:0", "no usable CUDA GPU"), ("cuda", "CUDA")],
)
def test_devices_checked_before_building(device, message, image, tmp_path, capsys, no_model):
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU
        message = "CUDA GPU(s)"
    argv = ["predict", str(image), "--vocab", "a", "--device", device, "--out", str(tmp_path / "o")]
    assert message in _usage_error(argv, capsys)


@pytest.mark.parametrize("vocab", ["", " ", ",,", " , | "])
def test_empty_vocab_is_refused(vocab, image, tmp_path, capsys, no_model):
    argv = ["predict", str(image), "--vocab", vocab, "--out", str(tmp_path / "o")]
    assert "names no class" in _usage_error(argv, capsys)


def test_bad_vocab_files(image, tmp_path, capsys, no_model):
    binary = tmp_path / "classes.bin"
    binary.write_bytes(bytes(range(256)))
    argv = ["predict", str(image), "--out", str(tmp_path / "o"), "--vocab-file"]
    assert "binary file, not text" in _usage_error([*argv, str(binary)], capsys)
    assert "is a folder" in _usage_error([*argv, str(tmp_path)], capsys)
    latin = tmp_path / "classes.txt"
    latin.write_bytes("th\xe9\n".encode("latin-1"))
    assert "not UTF-8 text" in _usage_error([*argv, str(latin)], capsys)


def test_config_typos_and_cycles(tmp_path, capsys):
    line = _usage_error(["config", "shapes-tiny", "foo.bar=1"], capsys)
    assert "unknown top-level key 'foo'" in line
    line = _usage_error(["config", "shapes-tiny", "pipline.logit_scale=3"], capsys)
    assert "Did you mean 'pipeline'" in line
    cyclic = tmp_path / "cycle.yaml"
    cyclic.write_text("_base_: shapes-tiny\nseed: ${work_dir}\nwork_dir: ${seed}\n")
    assert "interpolation cannot be resolved" in _usage_error(["config", str(cyclic)], capsys)
