"""Pretrained CLIP tags: the Hugging Face cache first, one fast download try, commands that work."""

from __future__ import annotations

import importlib.metadata
import time

import pytest

from ovseg.errors import WeightsNotFoundError
from ovseg.models.backbones.clip_weights import CHECKPOINT_OVERRIDE, resolve_pretrained_tag
from tests.test_hub import PROXIES, closed_port

REPO = "timm/vit_base_patch16_clip_224.openai"


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)


def _message(cache_dir) -> str:
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_pretrained_tag("ViT-B-16", "openai", cache_dir=str(cache_dir))
    return str(info.value)


def test_missing_weights_suggest_only_commands_that_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = _message(tmp_path)
    assert "(HF_HUB_OFFLINE is set)" in message
    assert f"`hf download {REPO} open_clip_model.safetensors`" in message
    assert "--local-dir DIR` and pass" in message
    assert f"{CHECKPOINT_OVERRIDE}=DIR/open_clip_model.safetensors" in message
    for gone in ("huggingface-cli", "--checkpoint", "checkpoint=PATH"):
        assert gone not in message
    scripts = {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert "hf" in scripts  # the installed hub client ships the command we name


def test_without_network_the_error_comes_at_once(online, monkeypatch, tmp_path, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    message = _message(tmp_path)
    assert time.monotonic() - start < 5
    assert "no network: cannot reach 127.0.0.1" in message and "hf download" in message
    assert "Retry" not in capsys.readouterr().err


def test_a_cached_file_is_found_without_network(online, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    repo = tmp_path / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    weights = repo / "snapshots" / "0123abcd" / "open_clip_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"stand-in")
    assert resolve_pretrained_tag("ViT-B-16", "openai", cache_dir=str(tmp_path)) == weights
