"""The SAM 2.1 + CLIP ViT-B/16 presets: schema, missing-weights errors, and a tiny stand-in run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ovseg
from ovseg.config import load_config, to_container
from ovseg.errors import WeightsNotFoundError
from ovseg.io import write_png_atomic
from ovseg.models.decoders.sam2_build import SAM2_MODELS
from ovseg.pipelines.video import VideoSegmenter
from ovseg.preset_status import SAM2_RELEASE_FILES, preset_status
from ovseg.registry import MASK_DECODERS
from tests.models.decoders.sam2_tiny import TINY_SAM2_VIDEO, tiny_sam2

PRESETS = {
    "sam2.1-hiera-tiny": ("sam2.1_hiera_t", "sam2.1_hiera_tiny.pt", "facebook/sam2.1-hiera-tiny"),
    "sam2.1-hiera-small": ("sam2.1_hiera_s", "sam2.1_hiera_small.pt", "facebook/sam2.1-hiera-small"),
    "sam2.1-hiera-base-plus": (
        "sam2.1_hiera_b+", "sam2.1_hiera_base_plus.pt", "facebook/sam2.1-hiera-base-plus",
    ),
    "sam2.1-hiera-large": ("sam2.1_hiera_l", "sam2.1_hiera_large.pt", "facebook/sam2.1-hiera-large"),
}  # fmt: skip


def test_release_table_agrees_with_the_builder():
    assert SAM2_RELEASE_FILES == {k: v["file"] for k, v in SAM2_MODELS.items()}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_sections_and_status(name, tmp_path, monkeypatch):
    model_type, file, _ = PRESETS[name]
    cfg = to_container(load_config(name))
    for task in ("referring", "instance"):
        section = cfg["pipelines"][task]
        assert section["decoder"] == {"type": "Sam2Decoder", "model_type": model_type}
        assert section["backbone"]["model_name"] == "ViT-B-16"
        assert section["backbone"]["pretrained"] == "openai"
    assert cfg["video"]["propagation"] == "sam2"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    status = preset_status(name)
    needs = {w.what: w.fetch for w in status.missing("instance")}
    assert file in needs[f"SAM 2 {model_type}"]
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / file) in needs[f"SAM 2 {model_type}"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_missing_weights_name_the_release_file(name, tmp_path, monkeypatch):
    model_type, file, repo = PRESETS[name]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    decoder = to_container(load_config(name))["pipelines"]["referring"]["decoder"]
    with pytest.raises(WeightsNotFoundError) as info:
        MASK_DECODERS.build(decoder)
    assert file in str(info.value) and repo in str(info.value)


def test_video_referring_on_a_tiny_stand_in(tiny_model_names, tmp_path, one_torch_thread):
    """The preset's pipeline with a tiny CLIP and a tiny SAM 2 checkpoint in the release layout."""
    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": tiny_sam2(seed=5, overrides=TINY_SAM2_VIDEO).state_dict()}, checkpoint)
    cfg = to_container(load_config("sam2.1-hiera-tiny"))
    cfg["pipelines"]["referring"]["backbone"] = {
        "type": "ClipBackbone",
        "model_name": tiny_model_names["vit"],
        "dense_mode": "sclip",
        "templates": "photo",
    }
    cfg["pipelines"]["referring"]["decoder"].update(
        overrides=TINY_SAM2_VIDEO, checkpoint=str(checkpoint)
    )
    cfg["pipelines"]["referring"]["inference"] = {"short_side": 32, "max_long_side": 64}
    pipeline = ovseg.create_pipeline(cfg, task="video_referring", redetect_every=2)
    assert isinstance(pipeline, VideoSegmenter)
    assert (pipeline.propagation, pipeline.redetect_every, pipeline.patience) == ("sam2", 2, 15)
    rng = np.random.default_rng(0)
    for t in range(3):
        write_png_atomic(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8), tmp_path / f"{t}.png")
    results = pipeline(tmp_path, "a red square")
    assert [r.detected for r in results] == [True, False, True]
    for result in results:
        assert result.masks.shape[1:] == (32, 40) and result.class_names == ["a red square"]
        assert len(set(result.track_ids.tolist())) == len(result)


def test_hub_folder_without_torch_is_torchs(tmp_path, monkeypatch):
    from ovseg.preset_status import torch_hub_dir

    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert torch_hub_dir() == Path(torch.hub.get_dir())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert torch_hub_dir() == Path(torch.hub.get_dir())
