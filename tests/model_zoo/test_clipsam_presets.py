"""The clipsam-* presets: real CLIP + SAM pairs for every task, with the methods' settings.

Values are checked against the sources the preset comments name: READ's SasP settings
(rui-qian/READ model/READ.py), segment-anything's automatic generator defaults
(SamAutomaticMaskGenerator), CaSED's search (altndrr/vic: k 10, alpha 0.7) and SCLIP's defaults.
"""

from __future__ import annotations

import pytest
import torch

import ovseg
import ovseg.models.decoders.sam as sam_module
from ovseg.config import load_config, to_container
from ovseg.errors import DatabaseError, WeightsNotFoundError
from ovseg.model_zoo.sam_release import OFFICIAL_CHECKPOINTS

PRESETS = {
    # name: (CLIP model, tag, SAM model_type, database folder name)
    "clipsam-vitb16-samb": ("ViT-B-16", "openai", "vit_b", "pmd-vitb16-openai"),
    "clipsam-vitl14-saml": ("ViT-L-14", "openai", "vit_l", "pmd-vitl14-openai"),
    "clipsam-vitl14-samh": ("ViT-L-14", "openai", "vit_h", "pmd-vitl14-openai"),
    "clipsam-vitl14dc-samh": ("ViT-L-14", "datacomp_xl_s13b_b90k", "vit_h", "pmd-vitl14-datacomp"),
}
CLIP_FILES = {
    ("ViT-B-16", "openai"): "timm/vit_base_patch16_clip_224.openai",
    ("ViT-L-14", "openai"): "timm/vit_large_patch14_clip_224.openai",
    ("ViT-L-14", "datacomp_xl_s13b_b90k"): "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K",
}


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty Hugging Face cache and torch hub folder: no weight file is installed."""
    from huggingface_hub import constants

    (tmp_path / "hf").mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_names_its_models_and_the_methods_settings(name):
    clip, tag, sam, database = PRESETS[name]
    cfg = to_container(load_config(name))
    backbone = cfg["pipeline"]["backbone"]
    assert (backbone["model_name"], backbone["pretrained"]) == (clip, tag)
    assert backbone["dense_mode"] == "sclip" and backbone["templates"] == "imagenet80"
    # SCLIP's defaults (clip_segmentor.py, configs/cfg_*.py)
    assert cfg["pipeline"]["logit_scale"] == 40.0
    inference = cfg["pipeline"]["inference"]
    assert (inference["short_side"], inference["crop_size"], inference["stride"]) == (336, 224, 112)
    referring, instance = cfg["pipelines"]["referring"], cfg["pipelines"]["instance"]
    for task in (referring, instance):
        assert task["backbone"] == backbone  # one CLIP for every task
        assert task["decoder"] == {"type": "SamDecoder", "model_type": sam}
    # READ's SasP (7B model): 30 points, t_pos 0.8, t_neg 0.2, map down-sampled by 2
    assert referring["selector"] == {
        "type": "SasPSelector", "num_points": 30, "t_pos": 0.8, "t_neg": 0.2, "down_sample": 2,
    }  # fmt: skip
    assert referring["multimask"] is True
    # segment-anything's SamAutomaticMaskGenerator defaults
    assert instance["proposals"] == {
        "points_per_side": 32, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95,
        "box_nms_thresh": 0.7,
    }  # fmt: skip
    assert instance["classifier"] == {"type": "MaskPoolingClassifier"}
    assert instance["postprocess"]["logit_scale"] == 40.0
    assert instance["postprocess"]["crop_weight"] == 0.0
    # CaSED: k = 10, alpha = 0.7, single words
    assert cfg["database"] == {
        "path": f"~/.cache/ovseg/databases/{database}", "k": 10, "alpha": 0.7, "max_ngram": 1,
    }  # fmt: skip


def test_full_size_models_build_with_random_weights(monkeypatch, no_weights):
    """ViT-B/16 and SAM ViT-B at full size, random-init: every task's pipeline builds."""
    monkeypatch.setattr(sam_module, "resolve_sam_checkpoint", lambda *args: None)
    referring = ovseg.create_pipeline(
        "clipsam-vitb16-samb", task="referring", overrides=["pipeline.backbone.pretrained=null"]
    )
    assert referring.backbone.model_name == "ViT-B-16"
    assert referring.backbone.dense_mode == "sclip"
    encoder = referring.decoder.model.image_encoder
    assert (encoder.img_size, len(encoder.blocks), encoder.patch_embed.proj.out_channels) == (
        1024, 12, 768,
    )  # fmt: skip
    assert referring.selector.num_points == 30
    instance = ovseg.create_pipeline(
        "clipsam-vitb16-samb", task="instance", overrides=["pipeline.backbone.pretrained=null"]
    )
    assert instance.proposal_settings["pred_iou_thresh"] == 0.88
    assert instance.postprocess["logit_scale"] == 40.0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_missing_clip_weights_name_the_file(name, no_weights):
    clip, tag, _, _ = PRESETS[name]
    with pytest.raises(WeightsNotFoundError) as err:
        ovseg.create_pipeline(name, task="referring")
    message = str(err.value)
    assert CLIP_FILES[(clip, tag)] in message and "open_clip" in message


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_missing_sam_weights_name_the_release_file(name, no_weights, tiny_model_names):
    sam = PRESETS[name][2]
    tiny = {"model_name": tiny_model_names["vit"], "pretrained": None, "templates": "photo"}
    for task in ("referring", "instance"):
        with pytest.raises(WeightsNotFoundError) as err:
            ovseg.create_pipeline(name, task=task, backbone=tiny)
        entry = OFFICIAL_CHECKPOINTS[sam]
        assert entry["file"] in str(err.value) and entry["url"] in str(err.value)


def test_missing_database_names_the_build_command(no_weights, tiny_model_names, monkeypatch):
    monkeypatch.setenv("HOME", str(no_weights))
    tiny = [f"pipeline.backbone.model_name={tiny_model_names['vit']}",
            "pipeline.backbone.pretrained=null", "pipeline.backbone.templates=photo"]  # fmt: skip
    with pytest.raises(DatabaseError) as err:
        ovseg.create_pipeline("clipsam-vitl14-samh", task="vocab_free", overrides=tiny)
    message = str(err.value)
    assert "ovseg db build --texts CORPUS --preset clipsam-vitl14-samh" in message
    assert "pmd-vitl14-openai" in message and "docs/vocab_free.md" in message


@pytest.mark.slow
def test_largest_pair_builds_at_full_size(monkeypatch, no_weights):
    """ViT-L/14 (DataComp) and SAM ViT-H, random-init: the architectures the files must fit."""
    monkeypatch.setattr(sam_module, "resolve_sam_checkpoint", lambda *args: None)
    referring = ovseg.create_pipeline(
        "clipsam-vitl14dc-samh", task="referring", overrides=["pipeline.backbone.pretrained=null"]
    )
    visual = referring.backbone.model.visual
    assert (visual.patch_size, len(visual.transformer.resblocks)) == ((14, 14), 24)
    encoder = referring.decoder.model.image_encoder
    assert (len(encoder.blocks), encoder.patch_embed.proj.out_channels) == (32, 1280)
