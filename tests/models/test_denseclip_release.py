"""The authors' released DenseCLIP checkpoints: mmseg layout -> ovseg's modules, strictly.

The test writes a tiny checkpoint in exactly the reference layout (raoyongming/DenseCLIP
``segmentation/denseclip``: ``backbone.*`` of ``CLIPResNetWithAttention`` /
``CLIPVisionTransformer`` with ``fpn1..4``, ``text_encoder.*`` of ``CLIPTextContextEncoder``,
``context_decoder.*``, mmseg's ``neck.*`` (FPN) and ``decode_head.*`` (FPNHead, ``conv_seg``),
``contexts``, ``gamma``), saved as mmcv saves it (``state_dict`` + ``meta``).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from ovseg.errors import CheckpointError, VocabularyError
from ovseg.models.denseclip import DenseCLIPSegmentor
from ovseg.models.denseclip_release import (
    RELEASES,
    build_from_release,
    convert_release_state_dict,
    release_model_config,
)
from ovseg.pipelines.denseclip import DenseCLIPSegmenter
from tests.conftest import randomize_

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ("wall", "building", "sky")
SMALL = {
    "num_classes": len(CLASSES),
    "decoder": {"width": 16, "heads": 2, "layers": 1, "dropout": 0.1},
    "neck_args": {"fpn_channels": 8, "channels": 8, "dropout": 0.1},
}


def reference_name(key: str) -> str | None:
    """ovseg key -> the reference checkpoint's key (None: not stored there)."""
    if key in ("pixel_mean", "pixel_std"):
        return None
    renames = [
        ("backbone.visual.", "backbone."),
        ("prompt.text_encoder.", "text_encoder."),
        ("prompt.contexts", "contexts"),
        ("decode_head.neck.", "neck."),
        ("decode_head.head.", "decode_head."),
        ("decode_head.classifier.conv.", "decode_head.conv_seg."),
    ]
    if key.startswith("backbone.levels."):
        level, rest = key[len("backbone.levels.") :].split(".", 1)
        return f"backbone.fpn{int(level) + 1}.{rest}"
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old) :]
    return key  # gamma, context_decoder.*


def tiny_overrides(model_name: str, release: str) -> dict:
    """Tiny stand-ins for a release's architecture (2-block ViT: its two blocks form the
    pyramid; the score map joins the dense-token level)."""
    if release == "vit-b":
        return {"model_name": model_name, "input_resolution": 32, "out_indices": [0, 0, 1, 1],
                "score_concat_index": None, **SMALL}  # fmt: skip
    return {"model_name": model_name, "input_resolution": 64, **SMALL}


def tiny_release(model_name: str, release: str = "res50", seed: int = 0) -> DenseCLIPSegmentor:
    cfg = {**release_model_config(release), **tiny_overrides(model_name, release)}
    torch.manual_seed(seed)
    return randomize_(DenseCLIPSegmentor(**cfg, load_clip_weights=False), seed).eval()


def write_mmcv_checkpoint(model: DenseCLIPSegmentor, path, extra=None, drop=()) -> dict:
    state = OrderedDict()
    for key, value in model.state_dict().items():
        name = reference_name(key)
        if name is not None and name not in drop:
            state[name] = value.clone()
    state.update(extra or {})
    meta = {
        "mmcv_version": "1.4.0",
        "time": "Thu Dec  2 00:00:00 2021",
        "CLASSES": CLASSES,
        "PALETTE": [[120, 120, 120], [180, 120, 120], [6, 230, 230]],
        "config": "model = dict(type='DenseCLIP', ...)",
        "iter": 80000,
    }
    torch.save({"meta": meta, "state_dict": state}, path)
    return state


@pytest.fixture(scope="module")
def tiny_rn(tiny_model_names):
    return tiny_release(tiny_model_names["rn"])


def test_checkpoint_has_the_reference_layout(tiny_rn, tiny_model_names, tmp_path):
    """The names written are the reference's own, so the mapping is pinned to its code."""
    state = write_mmcv_checkpoint(tiny_rn, tmp_path / "rn.pth")
    loaded = torch.load(tmp_path / "rn.pth", weights_only=True)  # as mmcv saves: safe to read
    assert set(loaded) == {"meta", "state_dict"} and loaded["meta"]["CLASSES"] == CLASSES
    width = tiny_rn.prompt.text_encoder.width
    assert state["contexts"].shape == (1, 8, width)
    assert state["text_encoder.positional_embedding"].shape == (13, width)  # 8 contexts + 5
    assert state["gamma"].shape == (tiny_rn.embed_dim,)
    for key in ("backbone.conv1.weight", "backbone.layer1.0.downsample.0.weight",
                "backbone.attnpool.positional_embedding", "backbone.attnpool.c_proj.weight",
                "text_encoder.token_embedding.weight", "text_encoder.text_projection",
                "text_encoder.transformer.resblocks.0.attn.in_proj_weight",
                "context_decoder.memory_proj.1.weight", "context_decoder.decoder.0.mlp.3.weight",
                "context_decoder.decoder.0.cross_attn.q_proj.weight",
                "neck.lateral_convs.3.conv.bias", "neck.fpn_convs.0.conv.weight",
                "decode_head.scale_heads.0.0.bn.running_var",
                "decode_head.scale_heads.3.4.conv.weight"):  # fmt: skip
        assert key in state, key
    # the score map's K channels join the stride-32 level (2048 + 150 in the RN50 config)
    assert state["neck.lateral_convs.3.conv.weight"].shape[1] == 8 * 32 + len(CLASSES)
    assert state["decode_head.conv_seg.weight"].shape == (len(CLASSES), 8, 1, 1)
    assert not any(key.startswith(("pixel_", "prompt.", "identity_head")) for key in state)


@pytest.mark.parametrize("arch", ["rn", "vit"])
def test_every_tensor_lands_where_it_belongs(arch, tiny_model_names, tmp_path):
    release = "res50" if arch == "rn" else "vit-b"
    source = tiny_release(tiny_model_names[arch], release, seed=1)
    state = write_mmcv_checkpoint(source, tmp_path / "release.pth")
    if arch == "vit":  # CLIPVisionTransformer's pyramid ops and its doubled class embedding
        assert {"backbone.fpn1.0.weight", "backbone.fpn2.weight", "backbone.class_embedding",
                "backbone.proj", "backbone.ln_post.weight"} <= set(state)  # fmt: skip
    loaded = build_from_release(
        release, tmp_path / "release.pth", tiny_overrides(tiny_model_names[arch], release)
    )
    target = loaded.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(target[key], value), key
    images = torch.rand(1, 3, 64, 64)
    text = source.encode_names(list(CLASSES))
    with torch.inference_mode():
        np.testing.assert_array_equal(
            loaded(images, loaded.encode_names(list(CLASSES))).logits.numpy(),
            source(images, text).logits.numpy(),
        )


def test_left_over_missing_and_misshapen_keys_are_listed(tiny_rn, tmp_path):
    extra = {"decode_head.extra_conv.weight": torch.zeros(1), "identity_head.conv_seg.bias":
             torch.zeros(3)}  # fmt: skip
    state = write_mmcv_checkpoint(tiny_rn, tmp_path / "a.pth", extra=extra, drop={"gamma"})
    with pytest.raises(CheckpointError) as err:
        convert_release_state_dict(state, tiny_rn, "a.pth")
    message = str(err.value)
    assert "decode_head.extra_conv.weight" in message and "identity_head.conv_seg.bias" in message
    assert "model keys the file lacks: gamma" in message
    state = write_mmcv_checkpoint(tiny_rn, tmp_path / "b.pth")
    state["decode_head.conv_seg.weight"] = torch.zeros(150, 8, 1, 1)  # 150 classes vs 3
    with pytest.raises(CheckpointError, match=r"decode_head.conv_seg.weight \(150, 8, 1, 1\)"):
        convert_release_state_dict(state, tiny_rn)


def test_pipeline_runs_the_release_on_its_own_classes_only(tiny_rn, tiny_model_names, tmp_path):
    write_mmcv_checkpoint(tiny_rn, tmp_path / "release.pth")
    model = tiny_overrides(tiny_model_names["rn"], "res50")
    seg = DenseCLIPSegmenter(
        str(tmp_path / "release.pth"), model=model, release="res50",
        inference={"short_side": 64, "max_long_side": 64, "mode": "whole"},
    )  # fmt: skip
    result = seg(np.zeros((48, 64, 3), dtype=np.uint8), list(CLASSES))
    assert result.sem_seg.shape == (48, 64) and result.class_names == list(CLASSES)
    with pytest.raises(VocabularyError, match="exactly its 3 training classes"):
        seg(np.zeros((48, 64, 3), dtype=np.uint8), ["wall", "sky"])


def test_release_configs_follow_the_reference_configs():
    # segmentation/configs/denseclip_fpn_{res50,res101}_512x512_80k.py, ..._vit-b_640x640_80k.py
    assert set(RELEASES) == {"res50", "res101", "vit-b"}
    for name, (model_name, resolution) in {"res50": ("RN50", 512), "res101": ("RN101", 512),
                                           "vit-b": ("ViT-B-16", 640)}.items():  # fmt: skip
        cfg = release_model_config(name)
        assert (cfg["model_name"], cfg["input_resolution"]) == (model_name, resolution)
        assert (cfg["num_classes"], cfg["context_length"], cfg["num_contexts"]) == (150, 13, 8)
        assert cfg["decoder"] == {"width": 256, "heads": 4, "layers": 3, "dropout": 0.1}
        assert cfg["neck_args"]["fpn_channels"] == 256 and cfg["neck"] == "SemanticFPN"
    vit = release_model_config("vit-b")
    assert vit["score_concat_index"] == 2 and vit["out_indices"] == [3, 5, 7, 11]
    assert vit["cls_pos_includes_class_embedding"] is True


def test_full_size_rn50_release_architecture_has_the_checkpoint_shapes():
    """RN50 at full size, random-init: the shapes the released file must fit."""
    model = DenseCLIPSegmentor(**release_model_config("res50"), load_clip_weights=False)
    state = model.state_dict()
    assert state["backbone.visual.attnpool.positional_embedding"].shape == (257, 2048)  # 512/32
    assert state["prompt.text_encoder.positional_embedding"].shape == (13, 512)
    assert state["decode_head.neck.lateral_convs.3.conv.weight"].shape == (256, 2048 + 150, 1, 1)
    assert state["decode_head.classifier.conv.weight"].shape == (150, 256, 1, 1)
    assert state["gamma"].shape == (1024,) and state["prompt.contexts"].shape == (1, 8, 512)
