"""ovseg.hub: the one offline switch, and downloads that fail in seconds without network."""

from __future__ import annotations

import socket
import time

import pytest

from ovseg import hub
from ovseg.errors import WeightsNotFoundError

PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def online(monkeypatch):
    """HF_HUB_OFFLINE unset and no proxy, as on a machine that believes it has network."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "value, offline",
    [("1", True), ("true", True), ("YES", True), ("0", False), ("", False), ("False", False)],
)
def test_is_offline(value, offline, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.is_offline() is offline


def test_one_is_offline_for_clip_and_sam():
    from ovseg.models.backbones import clip_weights
    from ovseg.models.decoders import sam_weights

    assert clip_weights.is_offline is hub.is_offline
    assert not hasattr(sam_weights, "is_offline")  # it downloads through ovseg.hub only


def test_unreachable_host_is_reported_quickly(online):
    with socket.socket() as server:  # a listening port is reachable
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert hub.unreachable_reason(f"http://127.0.0.1:{server.getsockname()[1]}/x") is None
    start = time.monotonic()
    reason = hub.unreachable_reason(f"https://127.0.0.1:{closed_port()}/file")
    assert reason is not None and reason.startswith("cannot reach 127.0.0.1:")
    assert time.monotonic() - start < hub.PROBE_TIMEOUT_S + 1


def test_proxy_skips_the_probe(online, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub.unreachable_reason(f"https://127.0.0.1:{closed_port()}/file") is None


def test_hf_download_without_network_fails_once_and_fast(online, monkeypatch, capsys, caplog):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError, match="no network: cannot reach 127.0.0.1"):
        hub.download_hf_file("org/repo", ["model.safetensors"], cache_dir=None)
    assert time.monotonic() - start < 5
    captured = capsys.readouterr()
    assert "Retry" not in captured.err + captured.out + caplog.text
