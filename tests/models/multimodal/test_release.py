from __future__ import annotations

import pytest

from ovseg.errors import WeightsNotFoundError
from ovseg.models.multimodal.release import cached_snapshot, resolve_folder

REPO = "rui-qian/READ-LLaVA-v1.5-7B-for-fprefcoco"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _cache_snapshot(cache, repo, files):
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    snapshot = folder / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in files:
        (snapshot / name).write_text("{}")
    return snapshot


def test_local_folder_first(tmp_path, hf_cache):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    _cache_snapshot(hf_cache, REPO, ["config.json"])
    assert resolve_folder(tmp_path / "mine", REPO, "READ", "weights") == tmp_path / "mine"


def test_cached_snapshot_is_found(hf_cache):
    assert cached_snapshot(REPO) is None
    snapshot = _cache_snapshot(hf_cache, REPO, ["config.json", "model.safetensors"])
    assert resolve_folder(None, REPO, "READ", "weights").resolve() == snapshot.resolve()


def test_missing_folder_says_what_to_download(tmp_path, hf_cache):
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_folder(None, REPO, "READ model folder", "pipelines.reasoning.weights")
    text = str(info.value)
    assert f"hf download {REPO} --local-dir DIR" in text and f"`hf download {REPO}`" in text
    assert "pipelines.reasoning.weights=DIR" in text
    with pytest.raises(WeightsNotFoundError, match=r"no config.json in .*elsewhere"):
        resolve_folder(tmp_path / "elsewhere", REPO, "READ model folder", "x")
    with pytest.raises(WeightsNotFoundError, match="Set x=DIR"):
        resolve_folder(None, None, "READ model folder", "x")
