"""``ovseg demo`` / ``python demo/app.py``: option parsing, refusals, and what gets served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ovseg.api import DEFAULT_PRESET
from ovseg.commands import demo as cli
from ovseg.demo.security import MIB

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def captured_serve(monkeypatch):
    """Replace the server start with a recorder (the options are what is under test)."""
    import ovseg.demo.app

    calls = []

    def fake_serve(settings, source, *, overrides=(), device=None, block=True, provider=None):
        calls.append(
            {
                "settings": settings,
                "source": source,
                "overrides": list(overrides),
                "device": device,
                "block": block,
            }
        )
        return None

    monkeypatch.setattr(ovseg.demo.app, "serve", fake_serve)
    return calls


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_public_without_auth_is_refused(capsys, captured_serve):
    assert cli.main(["--public"]) == 2
    err = capsys.readouterr().err
    assert "Refusing to start" in err and "--auth" in err and "--auth-file" in err
    assert cli.main(["--share"]) == 2
    assert cli.main(["--host", "0.0.0.0", "--auth", "a:b"]) == 2
    assert "--public" in capsys.readouterr().err
    assert captured_serve == []


def test_defaults_serve_the_embedded_preset_on_loopback(captured_serve):
    assert cli.main([]) == 0
    (call,) = captured_serve
    settings = call["settings"]
    assert call["source"] == DEFAULT_PRESET and call["block"] is True
    assert (settings.host, settings.port, settings.share) == ("127.0.0.1", 7860, False)
    assert settings.max_upload_bytes == 10 * MIB
    assert (settings.queue_size, settings.concurrency) == (16, 1)
    assert settings.examples_dir == REPO / "demo" / "examples"
    assert (settings.video_max_bytes, settings.video_max_frames) == (8 * MIB, 300)


def test_options_reach_the_server(tmp_path, captured_serve):
    config = tmp_path / "my.yaml"
    config.write_text("_base_: shapes-tiny\n")
    argv = [
        "--config", str(config), "--public", "--auth", "u:p", "--port", "9123",
        "--max-upload-mb", "3", "--queue-size", "4", "--concurrency", "2",
        "--device", "cpu", "pipeline.logit_scale=30", "--no-examples",
        "--video-max-mb", "2", "--video-max-frames", "16",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    (call,) = captured_serve
    settings = call["settings"]
    assert call["source"] == str(config) and call["overrides"] == ["pipeline.logit_scale=30"]
    assert call["device"] == "cpu"
    assert (settings.host, settings.port, settings.credentials) == ("0.0.0.0", 9123, (("u", "p"),))
    assert settings.max_upload_bytes == 3 * MIB and settings.examples_dir is None
    assert (settings.queue_size, settings.concurrency) == (4, 2)
    assert (settings.video_max_bytes, settings.video_max_frames) == (2 * MIB, 16)


def test_preset_and_config_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        cli.demo_parser().parse_args(["--preset", "a", "--config", "b.yaml"])
    with pytest.raises(SystemExit):
        cli.demo_parser().parse_args(["--auth", "a:b", "--auth-file", "f"])


def test_missing_config_file_is_a_clear_error(capsys, captured_serve):
    assert cli.main(["--config", "no/such.yaml"]) == 2
    assert "no/such.yaml does not exist" in capsys.readouterr().err


def test_parser_factory_sets_the_command():
    args = cli.demo_parser().parse_args([])
    assert args.func is cli.cmd_demo


def test_the_script_is_the_command_and_refuses_before_loading_gradio():
    refused = run_script("-X", "importtime", "demo/app.py", "--public")
    assert refused.returncode == 2
    assert "ovseg demo: error: Refusing to start" in refused.stderr
    assert "--auth" in refused.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in refused.stderr.splitlines()]
    assert "ovseg.commands.demo" in imported
    assert not [name for name in imported if name.split(".")[0] == "gradio"]
