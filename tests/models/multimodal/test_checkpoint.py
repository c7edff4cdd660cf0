from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ovseg.errors import CheckpointError, ConfigError, WeightsNotFoundError
from ovseg.models.multimodal.checkpoint import (
    find_weight_files,
    load_read_model,
    map_read_keys,
    read_layout_state_dict,
)
from ovseg.models.multimodal.conversation import encode_prompt
from tests.models.decoders.sam_tiny import TINY_SAM
from tests.models.multimodal.read_tiny import TINY_CLIP, write_clip_folder, write_read_folder

READ_PREFIXES = (
    "lm_head.",
    "model.embed_tokens.",
    "model.layers.",
    "model.norm.",
    "model.mm_projector.",
    "model.visual_model.",
    "model.text_hidden_fcs.",
    "model.vision_tower.vision_tower.vision_model.",
)


@pytest.fixture(scope="module")
def released(tiny_read, tmp_path_factory):
    """A CLIP folder and READ folders in both layouts, written from the tiny model."""
    model, tok = tiny_read
    root = tmp_path_factory.mktemp("read")
    clip = write_clip_folder(root / "clip", model.mllm.vision_tower)
    return {
        "clip": clip,
        "safetensors": write_read_folder(root / "st", model, tok, clip, "safetensors"),
        "bin-sharded": write_read_folder(root / "bin", model, tok, clip, "bin-sharded"),
    }


def test_layout_matches_read_key_names(tiny_read):
    model, _ = tiny_read
    keys = list(read_layout_state_dict(model))
    assert all(k.startswith(READ_PREFIXES) for k in keys)
    for prefix in READ_PREFIXES:
        assert any(k.startswith(prefix) for k in keys), prefix
    assert "model.text_hidden_fcs.0.0.weight" in keys and "model.text_hidden_fcs.0.2.bias" in keys
    assert "model.mm_projector.0.weight" in keys and "model.mm_projector.2.weight" in keys
    assert "model.visual_model.mask_decoder.iou_token.weight" in keys
    mapped, unknown = map_read_keys(read_layout_state_dict(model), model)
    assert unknown == [] and set(mapped) == set(model.state_dict())


@pytest.mark.parametrize("layout", ["safetensors", "bin-sharded"])
def test_strict_load_reproduces_the_model(tiny_read, released, layout):
    model, tok = tiny_read
    if layout == "bin-sharded":
        assert len(find_weight_files(released[layout])) == 2
    loaded, tokenizer = load_read_model(
        released[layout], sam_architecture=TINY_SAM, attn_implementation="eager"
    )
    assert loaded.seg_token_idx == tokenizer.convert_tokens_to_ids("[SEG]") == model.seg_token_idx
    assert loaded.eos_token_id == tokenizer.eos_token_id
    reference = model.state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0, msg=key)
    picture = (np.random.default_rng(3).random((36, 44, 3)) * 255).astype(np.uint8)
    ids = encode_prompt("What is the red star ?", tokenizer)
    a = loaded.generate(picture, ids, max_new_tokens=3)
    b = model.generate(picture, ids, max_new_tokens=3)
    assert a.output_ids == b.output_ids


def test_sam_architecture_from_config(tiny_read, released, tmp_path):
    folder = released["safetensors"]
    config = json.loads((folder / "config.json").read_text())
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "config.json").write_text(json.dumps({**config, "ovseg_sam_architecture": TINY_SAM}))
    loaded, _ = load_read_model(copy)
    assert loaded.visual_model.image_encoder.img_size == 64


def _copy_with(folder, tmp_path, edit):
    copy = tmp_path / "edited"
    copy.mkdir()
    for path in folder.iterdir():
        if path.name != "model.safetensors":
            (copy / path.name).write_bytes(path.read_bytes())
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(copy / "model.safetensors"))
    return copy


def test_left_over_key_is_an_error(released, tmp_path):
    def add(state):
        state["model.extra_head.weight"] = torch.zeros(2)

    folder = _copy_with(released["safetensors"], tmp_path, add)
    with pytest.raises(CheckpointError, match="model.extra_head.weight"):
        load_read_model(folder, sam_architecture=TINY_SAM)


def test_missing_key_is_an_error(released, tmp_path):
    def drop(state):
        del state["model.text_hidden_fcs.0.2.weight"]

    folder = _copy_with(released["safetensors"], tmp_path, drop)
    with pytest.raises(CheckpointError, match=r"1 missing keys \['text_hidden_fcs.0.2.weight'\]"):
        load_read_model(folder, sam_architecture=TINY_SAM)


def test_wrong_shape_is_an_error(released, tmp_path):
    def grow(state):
        state["model.norm.weight"] = torch.ones(40)

    folder = _copy_with(released["safetensors"], tmp_path, grow)
    with pytest.raises(CheckpointError, match="shapes differ"):
        load_read_model(folder, sam_architecture=TINY_SAM)


def test_derived_rotary_buffer_is_ignored(released, tmp_path):
    def add(state):
        state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)

    folder = _copy_with(released["safetensors"], tmp_path, add)
    load_read_model(folder, sam_architecture=TINY_SAM)


def test_vision_tower_inside_the_folder(tiny_read, tmp_path):
    model, tok = tiny_read
    folder = write_read_folder(
        tmp_path / "with_tower",
        model,
        tok,
        tmp_path / "absent",
        include_tower=True,
        extra_config={"vision_config": TINY_CLIP},
    )
    loaded, _ = load_read_model(folder, sam_architecture=TINY_SAM)
    torch.testing.assert_close(
        loaded.mllm.vision_tower.state_dict(), model.mllm.vision_tower.state_dict()
    )


def test_missing_folders_say_what_to_download(released, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="download READ-X"):
        load_read_model(tmp_path / "nowhere", missing_hint="download READ-X")
    with pytest.raises(WeightsNotFoundError, match="clip-vit-large-patch14-336"):
        load_read_model(
            released["safetensors"], vision_tower=tmp_path / "no_clip", sam_architecture=TINY_SAM
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises((WeightsNotFoundError, CheckpointError)):
        load_read_model(empty)


def test_embedded_open_clip_tower_and_packaged_sam(tiny_read):
    """The embedded configuration: ovseg-ViT-Ti-8 (shapes) as the tower, ovseg-sam-tiny's
    packaged weights as SAM."""
    from ovseg.models.decoders.sam_weights import resolve_sam_checkpoint
    from ovseg.models.multimodal.checkpoint import build_read_model
    from ovseg.models.multimodal.vision import OpenClipVisionTower
    from ovseg.weights import load_state_dict
    from tests.models.multimodal.read_tiny import tiny_config

    _, tok = tiny_read
    sam_file = resolve_sam_checkpoint("ovseg-sam-tiny", None, "shapes")
    config = {**tiny_config(tok), "mm_hidden_size": 128}
    config["out_dim"] = 64
    model = build_read_model(
        config,
        tok.convert_tokens_to_ids("[SEG]"),
        vision_tower="open_clip:ovseg-ViT-Ti-8@shapes",
        sam_architecture="ovseg-sam-tiny",
        sam_checkpoint=sam_file,
    )
    tower = model.mllm.vision_tower
    assert isinstance(tower, OpenClipVisionTower)
    assert tower.grid_size == (8, 8) and tower.hidden_size == 128 and tower.image_size == 64
    expected = load_state_dict(sam_file)
    for key, value in model.visual_model.state_dict().items():
        torch.testing.assert_close(value, expected[key].to(value.dtype), msg=key)
    picture = (np.random.default_rng(1).random((50, 70, 3)) * 255).astype(np.uint8)
    prepared = model.prepare_image(picture)
    assert prepared.clip_pixels.shape == (3, 64, 64) and prepared.sam_pixels.shape == (3, 128, 128)
    assert model.mllm.encode_images(prepared.clip_pixels[None]).shape == (1, 64, 32)
    with pytest.raises(ConfigError, match="mm_hidden_size"):
        build_read_model(
            tiny_config(tok),
            1,
            vision_tower="open_clip:ovseg-ViT-Ti-8@shapes",
            sam_architecture="ovseg-sam-tiny",
        )


def test_bf16_load_keeps_sam_constants_exact(tiny_read, released):
    model, _ = tiny_read
    loaded, _ = load_read_model(
        released["safetensors"], sam_architecture=TINY_SAM, dtype=torch.bfloat16
    )
    assert loaded.mllm.language_model.lm_head.weight.dtype == torch.bfloat16
    assert loaded.visual_model.mask_decoder.iou_token.weight.dtype == torch.bfloat16
    sam, reference = loaded.visual_model, model.visual_model
    pe = sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    assert pe.dtype == torch.float32
    torch.testing.assert_close(
        pe, reference.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix, rtol=0, atol=0
    )
    assert sam.pixel_mean.dtype == torch.float32
    assert sam.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53], abs=1e-5)
    again = loaded.to(torch.float16).to(torch.float32)  # later casts keep them as well
    torch.testing.assert_close(
        again.visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
        reference.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
        rtol=0,
        atol=0,
    )


def test_build_in_bf16_creates_every_parameter_in_bf16_and_generates(tiny_read):
    """build_read_model(dtype=bf16) makes no float32 copy of any layer, text_hidden_fcs
    included (a float32 head fails in generate on a bf16 [SEG] state)."""
    from ovseg.models.multimodal.checkpoint import build_read_model
    from tests.models.multimodal.read_tiny import tiny_config, tiny_tower

    _, tok = tiny_read
    seg = tok.convert_tokens_to_ids("[SEG]")
    model = build_read_model(
        tiny_config(tok),
        seg,
        vision_tower=tiny_tower().to(torch.bfloat16),
        sam_architecture=TINY_SAM,
        eos_token_id=tok.eos_token_id,
        dtype=torch.bfloat16,
    ).eval()
    kept_float32 = {"visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"}
    wrong = [
        name
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if tensor.is_floating_point() and tensor.dtype != torch.bfloat16
        and name not in kept_float32 and not name.startswith("visual_model.pixel_")
        and not name.endswith("inv_freq")  # LLaMA keeps its rotary frequencies in fp32
    ]  # fmt: skip
    assert wrong == []
    # the [SEG] path in bf16: force [SEG] as the first answer token, then EOS
    steps = iter([seg, tok.eos_token_id])

    def script(module, inputs, output):
        output = output.clone()
        output[:, -1] = -1e4
        output[:, -1, next(steps)] = 0
        return output

    hook = model.mllm.language_model.lm_head.register_forward_hook(script)
    try:
        prompt = encode_prompt("What is the largest red star ?", tok, num_image_tokens=0)
        picture = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
        answer = model.generate(picture, prompt, max_new_tokens=4)
    finally:
        hook.remove()
    assert answer.output_ids == [seg] and len(answer.segments) == 1
    assert answer.segments[0].mask.shape == (40, 60)


def test_save_read_folder_round_trip(tiny_read, released, tmp_path):
    from ovseg.models.multimodal.checkpoint import save_read_folder
    from ovseg.models.multimodal.lora import add_lora
    from tests.models.multimodal.read_tiny import tiny_config

    model, tok = tiny_read
    config = tiny_config(tok, released["clip"])
    folder = save_read_folder(tmp_path / "saved", model, tok, config)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    loaded, _ = load_read_model(folder, sam_architecture=TINY_SAM)
    reference = model.state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0, msg=key)
    import copy

    adapted = copy.deepcopy(model)
    add_lora(adapted)
    with pytest.raises(CheckpointError, match="merge them first"):
        save_read_folder(tmp_path / "lora", adapted, tok, config)


def test_folder_selector_is_used_and_a_bad_one_is_a_clear_error(tiny_read, released, tmp_path):
    from ovseg.models.multimodal.checkpoint import save_read_folder
    from ovseg.models.prompts.sasp import SasPSelector
    from tests.models.multimodal.read_tiny import tiny_config

    model, tok = tiny_read
    config = tiny_config(tok, released["clip"])
    default, _ = load_read_model(released["safetensors"], sam_architecture=TINY_SAM)
    assert isinstance(default.selector, SasPSelector)
    assert (default.selector.down_sample, default.selector.t_pos) == (2, 0.8)  # READ-7B's
    spec = {"type": "SasPSelector", "compat": "read", "down_sample": 1, "t_pos": 0.9}
    folder = save_read_folder(tmp_path / "own", model, tok, {**config, "ovseg_sasp_selector": spec})
    loaded, _ = load_read_model(folder, sam_architecture=TINY_SAM)
    assert (loaded.selector.down_sample, loaded.selector.t_pos) == (1, 0.9)
    bad = save_read_folder(
        tmp_path / "bad", model, tok, {**config, "ovseg_sasp_selector": {"type": "NoSuchSelector"}}
    )
    with pytest.raises(CheckpointError, match="ovseg_sasp_selector"):
        load_read_model(bad, sam_architecture=TINY_SAM)
    untyped = save_read_folder(
        tmp_path / "untyped", model, tok, {**config, "ovseg_sasp_selector": 3}
    )
    with pytest.raises(CheckpointError, match="mapping with a 'type'"):
        load_read_model(untyped, sam_architecture=TINY_SAM)
