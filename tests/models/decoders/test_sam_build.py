"""build_sam: official hyper-parameters, small configs, safe and strict checkpoint loading."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file
from segment_anything import sam_model_registry

from ovseg.errors import CheckpointError, ConfigError, UnsafeCheckpointError, WeightsNotFoundError
from ovseg.models.decoders.sam_build import (
    OFFICIAL_CHECKPOINTS,
    SAM_ARCHITECTURES,
    SamArchitecture,
    build_sam,
    create_sam,
    list_sam_architectures,
    register_sam_architecture,
    resolve_sam_architecture,
)
from tests.models.decoders.sam_tiny import TINY_SAM, TINY_WINDOWED_SAM, tiny_sam

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _structure(model: torch.nn.Module) -> tuple[str, dict[str, tuple[int, ...]], list[int]]:
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    windows = [block.window_size for block in model.image_encoder.blocks]
    return repr(model), shapes, windows


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h", "default"])
def test_official_architectures_equal_segment_anythings(model_type):
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        reference = sam_model_registry[model_type]()
        ours = create_sam(resolve_sam_architecture(model_type)[1])
    assert _structure(ours) == _structure(reference)
    assert torch.equal(ours.pixel_mean, reference.pixel_mean)
    assert torch.equal(ours.pixel_std, reference.pixel_std)
    assert ours.image_encoder.img_size == 1024 and ours.prompt_encoder.embed_dim == 256


def test_tiny_architecture_is_registered_and_small():
    arch = SAM_ARCHITECTURES["ovseg-sam-tiny"]
    assert "ovseg-sam-tiny" in list_sam_architectures()
    assert (arch.image_size, arch.patch_size, arch.encoder_embed_dim) == (128, 8, 128)
    assert arch.window_size == 0 and arch.low_res_size == 64
    model = build_sam("ovseg-sam-tiny")
    assert all(block.window_size == 0 for block in model.image_encoder.blocks)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    image = torch.zeros((1, 3, 128, 128))
    assert model.image_encoder(image).shape == (1, 64, 16, 16)


def test_user_configs_mapping_and_json(tmp_path):
    model = build_sam(TINY_WINDOWED_SAM)
    assert [b.window_size for b in model.image_encoder.blocks] == [4, 0]
    path = tmp_path / "my-sam.json"
    path.write_text(json.dumps(TINY_SAM))
    name, arch = resolve_sam_architecture(str(path))
    assert name == "my-sam" and arch == SamArchitecture.from_mapping(TINY_SAM)
    assert arch.to_dict()["encoder_global_attn_indexes"] == [0]
    register_sam_architecture("test-tiny-sam", TINY_SAM)
    register_sam_architecture("test-tiny-sam", TINY_SAM)  # same fields again: fine
    assert build_sam("test-tiny-sam").image_encoder.img_size == 64
    with pytest.raises(ConfigError, match="already registered"):
        register_sam_architecture("test-tiny-sam", {**TINY_SAM, "image_size": 128})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"encoder_embd_dim": 32}, "Unknown .* keys"),
        ({"patch_size": 7}, "not a multiple of patch_size"),
        ({"prompt_embed_dim": 36}, "multiple of 8"),
        ({"encoder_global_attn_indexes": [5]}, "are not blocks"),
        ({"window_size": 0, "encoder_global_attn_indexes": []}, "window_size > 0"),
    ],
)
def test_bad_configs_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        build_sam({**TINY_SAM, **fields})


def test_unknown_names_and_missing_json(tmp_path):
    with pytest.raises(ConfigError, match="vit_b"):
        build_sam("vit_x")
    with pytest.raises(ConfigError, match="does not exist"):
        build_sam(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        build_sam(str(tmp_path / "bad.json"))


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_official_format_checkpoint_loads(tmp_path):
    source = tiny_sam(seed=3)
    path = tmp_path / "sam_tiny.pth"
    torch.save(source.state_dict(), path)  # how the official .pth files are written
    loaded = build_sam(TINY_SAM, checkpoint=path)
    _assert_same_weights(loaded, source)
    assert not loaded.training
    assert torch.equal(loaded.pixel_mean, source.pixel_mean)  # not in the state dict
    image = torch.rand((1, 3, 64, 64)) * 255
    with torch.no_grad():  # the same weights through the same ops: exact by design
        assert torch.equal(loaded.image_encoder(image), source.image_encoder(image))


def test_safetensors_and_fp16_checkpoints_load(tmp_path):
    source = tiny_sam(seed=4)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "sam.safetensors"))
    _assert_same_weights(build_sam(TINY_SAM, checkpoint=tmp_path / "sam.safetensors"), source)
    save_file({k: v.half() for k, v in state.items()}, str(tmp_path / "half.safetensors"))
    half = build_sam(TINY_SAM, checkpoint=tmp_path / "half.safetensors")
    assert all(p.dtype == torch.float32 for p in half.parameters())
    torch.testing.assert_close(
        half.mask_decoder.iou_token.weight, source.mask_decoder.iou_token.weight.half().float()
    )


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_tampered_pickle_is_refused(tmp_path, monkeypatch):
    pwned = tmp_path / "pwned"
    state = dict(tiny_sam().state_dict())
    state["image_encoder.neck.0.weight"] = _System(f"touch {pwned}")
    path = tmp_path / "evil.pth"
    torch.save(state, path)

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load was reached for a tampered file")

    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        build_sam(TINY_SAM, checkpoint=path)
    assert not pwned.exists()


def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "windowed.pth"
    torch.save(build_sam(TINY_WINDOWED_SAM).state_dict(), path)
    with pytest.raises(CheckpointError, match="unexpected keys") as info:
        build_sam(TINY_SAM, checkpoint=path)
    assert "image_encoder.blocks.1" in str(info.value)

    state = dict(build_sam(TINY_SAM).state_dict())
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(
        CheckpointError, match=r"1 missing keys \['mask_decoder.iou_token.weight'\]"
    ):
        build_sam(TINY_SAM, checkpoint=tmp_path / "partial.pth")

    torch.save(build_sam({**TINY_SAM, "encoder_embed_dim": 48}).state_dict(), tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="shapes differ"):
        build_sam(TINY_SAM, checkpoint=tmp_path / "w.pth")


def test_missing_checkpoint_names_the_official_files(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        build_sam("vit_l", checkpoint=tmp_path / "sam_vit_l.pth")
    message = str(info.value)
    for entry in OFFICIAL_CHECKPOINTS.values():
        assert entry["file"] in message and entry["url"] in message
    assert "For vit_l the file is sam_vit_l_0b3195.pth" in message
    assert {e["file"] for e in OFFICIAL_CHECKPOINTS.values()} == {
        "sam_vit_b_01ec64.pth",
        "sam_vit_l_0b3195.pth",
        "sam_vit_h_4b8939.pth",
    }


def test_device_argument():
    assert build_sam(TINY_SAM, device="cpu").device == torch.device("cpu")
