"""ClipBackbone: weight loading in open_clip's formats, text encoding, ResNet dense features."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ovseg.errors import CheckpointError, ConfigError, VocabularyError, WeightsNotFoundError
from ovseg.models.backbones.clip import ClipBackbone, build_open_clip_model
from ovseg.models.backbones.dense_resnet import resnet_dense_tokens
from tests.conftest import TINY_CONFIGS, randomize_
from tests.tolerance import assert_close_to_scale


@pytest.fixture
def saved_vit(tiny_model_names, tmp_path):
    """A randomised tiny ViT and its state dict saved in several official formats."""
    model = randomize_(open_clip.create_model(tiny_model_names["vit"]), seed=3).eval()
    state = model.state_dict()
    paths = {
        "bin": tmp_path / "open_clip_pytorch_model.bin",
        "safetensors": tmp_path / "weights.safetensors",
        "wrapped": tmp_path / "epoch_1.pt",
    }
    torch.save(state, paths["bin"])
    save_file({k: v.contiguous() for k, v in state.items()}, paths["safetensors"])
    # open_clip training checkpoints wrap the weights: {"epoch", "state_dict" with "module." keys}
    torch.save(
        {"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, paths["wrapped"]
    )
    folder = tmp_path / "hub"
    folder.mkdir()
    cfg = {
        "model_cfg": TINY_CONFIGS[tiny_model_names["vit"]],
        "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "open_clip_model.safetensors")
    paths["folder"] = folder
    return model, paths


@pytest.mark.parametrize("fmt", ["bin", "safetensors", "wrapped", "folder"])
def test_checkpoint_loads_bit_exactly(saved_vit, tiny_model_names, fmt):
    model, paths = saved_vit
    loaded, mean, std = build_open_clip_model(tiny_model_names["vit"], checkpoint=paths[fmt])
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    if fmt == "folder":
        assert mean == (0.5, 0.5, 0.5) and std == (0.25, 0.25, 0.25)


def test_missing_checkpoint_is_typed(tiny_model_names, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        ClipBackbone(tiny_model_names["vit"], checkpoint=str(tmp_path / "nope.safetensors"))


def test_wrong_architecture_checkpoint(saved_vit, tiny_model_names):
    _, paths = saved_vit
    with pytest.raises(CheckpointError, match="does not fit"):
        build_open_clip_model(tiny_model_names["rn"], checkpoint=paths["safetensors"])


def test_offline_tag_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        build_open_clip_model("ViT-B-16", pretrained="openai", cache_dir=str(tmp_path))
    message = str(info.value)
    assert "timm/vit_base_patch16_clip_224.openai" in message
    assert "pipeline.backbone.checkpoint=DIR/open_clip_model.safetensors" in message


def test_unknown_tag_and_architecture():
    with pytest.raises(ConfigError, match="Known tags"):
        build_open_clip_model("ViT-B-16", pretrained="not-a-tag")
    with pytest.raises(ConfigError, match="no architecture"):
        build_open_clip_model("ViT-Nonexistent-99")


def test_torchscript_archive_is_refused(tiny_model_names, tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "ViT-B-16.pt"
    scripted.save(str(path))
    with pytest.raises(CheckpointError, match="TorchScript"):
        build_open_clip_model(tiny_model_names["vit"], checkpoint=path)


# ---------------------------------------------------------------- text encoder
@pytest.fixture
def backbone(saved_vit, tiny_model_names):
    _, paths = saved_vit
    return ClipBackbone(
        tiny_model_names["vit"], checkpoint=str(paths["safetensors"]), templates="imagenet80"
    )


def test_encode_text_is_template_ensemble(backbone):
    names = ["red star", "sand"]
    embeds = backbone.encode_text(names)
    assert embeds.shape == (2, 32)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(2))
    templates = open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES
    assert len(templates) == 80
    with torch.no_grad():
        for row, name in zip(embeds, names):
            tokens = backbone.tokenizer([t(name) for t in templates])
            per_template = F.normalize(backbone.model.encode_text(tokens), dim=-1)
            expected = F.normalize(per_template.mean(0), dim=0)
            torch.testing.assert_close(row, expected, rtol=1e-5, atol=1e-6)


def test_repeated_vocabulary_costs_no_text_call(backbone, monkeypatch):
    backbone.encode_text(["a", "b"])
    calls = []
    original = backbone.model.encode_text
    monkeypatch.setattr(
        backbone.model, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    backbone.encode_text(["b", "a", "a"])
    assert calls == []
    backbone.encode_text(["a", "c"])
    assert len(calls) == 1


def test_bad_names(backbone):
    with pytest.raises(VocabularyError):
        backbone.encode_text([])
    with pytest.raises(VocabularyError):
        backbone.encode_text(["ok", "  "])


def test_custom_templates_need_placeholder(tiny_model_names):
    with pytest.raises(ConfigError, match="placeholder|'\\{\\}'"):
        ClipBackbone(tiny_model_names["vit"], templates=["a photo"])


# ---------------------------------------------------------------- ResNet dense
def test_resnet_dense_matches_attention_pool(tiny_model_names):
    model = randomize_(open_clip.create_model(tiny_model_names["rn"]), seed=5).eval()
    visual = model.visual
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        global_embed, dense = resnet_dense_tokens(visual, images)
        # another order of the same float32 ops (one pooled query vs all positions at once);
        # values reach ~55 and errors scale with that: measured <= 2.1e-7 of max|x|
        assert_close_to_scale(global_embed, visual(images), 1e-5, "global")
        # every position as the only query of the same pool, computed by hand
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
        tokens = x.flatten(2).permute(2, 0, 1)
        tokens = (
            torch.cat([tokens.mean(0, keepdim=True), tokens])
            + visual.attnpool.positional_embedding[:, None]
        )
        pool = visual.attnpool
        q, k, v = pool.q_proj(tokens), pool.k_proj(tokens), pool.v_proj(tokens)
        heads, (length, batch, width) = pool.num_heads, tokens.shape
        hd = width // heads

        def split(t):
            return t.reshape(length, batch, heads, hd).permute(1, 2, 0, 3)

        attn = torch.softmax(split(q) @ split(k).transpose(-1, -2) / hd**0.5, dim=-1)
        out = (attn @ split(v)).permute(0, 2, 1, 3).reshape(batch, length, width)
        out = pool.c_proj(out)
    expected = out[:, 1:].reshape(batch, 2, 2, -1).permute(0, 3, 1, 2)
    assert_close_to_scale(dense, expected, 1e-5, "dense tokens")


def test_resnet_backbone_dense_shape(tiny_model_names):
    backbone = ClipBackbone(tiny_model_names["rn"])
    dense = backbone.encode_dense(torch.randn(1, 3, 96, 128))
    assert dense.shape == (1, 32, 3, 4)


def test_the_backbone_reports_and_feeds_the_device_its_model_was_built_on(tiny_model_names):
    # the meta device stands in for a GPU: inputs and text tokens go to ``backbone.device``, so
    # a backbone built with device="cuda" must report it (its normalisation buffers included)
    backbone = ClipBackbone(tiny_model_names["vit"], device="meta")
    assert backbone.device.type == "meta"
    assert backbone.mean.device.type == "meta" and backbone.std.device.type == "meta"
    assert next(backbone.model.parameters()).device.type == "meta"
    tokens = backbone.encode_dense(torch.zeros(1, 3, 32, 32))
    assert tokens.device.type == "meta"
