"""Finding SAM weights: local paths, the official release in torch hub's cache, packaged tags."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ovseg.hub
from ovseg.errors import ConfigError, WeightsNotFoundError
from ovseg.model_zoo import embedded
from ovseg.models.decoders import SamDecoder
from ovseg.models.decoders.sam_build import OFFICIAL_CHECKPOINTS, register_sam_architecture
from ovseg.models.decoders.sam_weights import official_checkpoint_path, resolve_sam_checkpoint
from ovseg.weights import save_state_dict, sha256_file
from tests.models.decoders.sam_tiny import TINY_SAM, tiny_sam

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_local_checkpoint_and_exclusive_arguments(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"x")
    assert resolve_sam_checkpoint("vit_b", path, None) == path
    with pytest.raises(ConfigError, match="not both"):
        resolve_sam_checkpoint("vit_b", path, "sa1b")
    with pytest.raises(WeightsNotFoundError, match="sam_vit_b_01ec64.pth"):
        resolve_sam_checkpoint("vit_b", tmp_path / "absent.pth", None)


def test_official_weights_are_found_in_the_hub_cache(hub_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target = official_checkpoint_path("vit_h")
    assert target == hub_dir / "checkpoints" / "sam_vit_h_4b8939.pth"
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_sam_checkpoint("vit_h", None, None)  # default tag of official models
    message = str(info.value)
    assert "sam_vit_h_4b8939.pth" in message and str(target) in message
    assert "dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth" in message
    assert "HF_HUB_OFFLINE is set" in message and "decoder.checkpoint=/path/file" in message
    target.parent.mkdir(parents=True)
    target.write_bytes(b"weights")
    assert resolve_sam_checkpoint("vit_h", None, "sa1b") == target


def test_official_weights_are_downloaded_when_online(hub_dir, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake_download(url, destination):
        calls.append(url)
        Path(destination).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    monkeypatch.setattr(ovseg.hub, "unreachable_reason", lambda url: None)  # as if online
    path = resolve_sam_checkpoint("vit_b", None, None)
    assert path.read_bytes() == b"weights" and calls[0].endswith("sam_vit_b_01ec64.pth")

    def failing_download(url, destination):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", failing_download)
    with pytest.raises(WeightsNotFoundError, match="download failed: OSError"):
        resolve_sam_checkpoint("vit_l", None, None)


def test_small_models_need_weights_and_unknown_tags_say_what_exists():
    with pytest.raises(WeightsNotFoundError, match="shapes_tiny_sam.yaml"):
        resolve_sam_checkpoint("ovseg-sam-tiny", None, None)
    with pytest.raises(WeightsNotFoundError, match="Tags for 'vit_b': sa1b"):
        resolve_sam_checkpoint("vit_b", None, "shapes")


def test_packaged_tag_is_looked_up_by_model_type_and_tag(tmp_path, monkeypatch):
    source = tiny_sam(seed=6)
    path = save_state_dict(source.state_dict(), tmp_path / "tiny-sam-shapes.safetensors")
    monkeypatch.setattr(embedded, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setitem(
        embedded.EMBEDDED_WEIGHTS,
        ("test-packaged-sam", "shapes"),
        {"file": path.name, "sha256": sha256_file(path), "recipe": "test"},
    )
    register_sam_architecture("test-packaged-sam", TINY_SAM)
    decoder = SamDecoder("test-packaged-sam", pretrained="shapes")
    for key, value in source.state_dict().items():
        assert torch.equal(decoder.model.state_dict()[key], value), key


def test_without_network_the_official_download_fails_fast(hub_dir, monkeypatch):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a: calls.append(a))
    monkeypatch.setitem(
        OFFICIAL_CHECKPOINTS,
        "vit_b",
        {
            **OFFICIAL_CHECKPOINTS["vit_b"],
            "url": f"http://127.0.0.1:{_closed_port()}/sam_vit_b_01ec64.pth",
        },
    )
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError, match="no network: cannot reach 127.0.0.1"):
        resolve_sam_checkpoint("vit_b", None, None)
    assert time.monotonic() - start < 5 and calls == []  # one quick probe, no download tried


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
