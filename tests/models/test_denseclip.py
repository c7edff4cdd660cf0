"""DenseCLIP segmentor: heads, context update, sliding windows, export round trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovseg.errors import CheckpointError, ConfigError
from ovseg.inference.sliding import slide_inference
from ovseg.models.denseclip import DenseCLIPSegmentor
from ovseg.models.denseclip_export import build_from_export, export_segmentor
from ovseg.models.heads.denseclip import visual_context

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    "decoder": {"width": 16, "heads": 2, "layers": 1},
    "neck_args": {"fpn_channels": 16, "channels": 16},
}
NAMES = ["red circle", "blue star", "grass", "sky"]


def _segmentor(name, neck="SemanticFPN", **kwargs):
    torch.manual_seed(0)
    neck_args = {"channels": 16} if neck == "UPerNet" else SMALL["neck_args"]
    return DenseCLIPSegmentor(
        name, decoder=SMALL["decoder"], neck=neck, neck_args=neck_args, **kwargs
    )


@pytest.mark.parametrize("arch, size", [("rn", 64), ("vit", 32)])
@pytest.mark.parametrize("neck", ["SemanticFPN", "UPerNet"])
def test_forward_backward_of_every_head(tiny_model_names, arch, size, neck):
    model = _segmentor(tiny_model_names[arch], neck)
    text = model.encode_names(NAMES)
    images = torch.randn(2, 3, size, size)
    out = model(images, text)
    grid = size // model.backbone.dense_stride
    assert out.logits.shape == (2, 4, size // 4, size // 4)
    assert out.score_map.shape == (2, 4, grid, grid) and out.text.shape == (2, 4, 32)
    (out.logits.logsumexp(1).mean() + out.score_map.mean()).backward()
    frozen = {id(p) for p in model.prompt.text_encoder.parameters()}
    for name, param in model.named_parameters():
        if id(param) in frozen:
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None, name


def test_gamma_context_update_and_score_level(tiny_model_names):
    model = _segmentor(tiny_model_names["vit"]).eval()
    assert model.gamma.shape == (32,) and bool((model.gamma == 1e-4).all())
    assert model.score_level == 1  # 8 px patches: the stride-8 level is the token grid
    assert model.decode_head.neck.lateral_convs[1].conv.in_channels == 64 + 32
    rn = _segmentor(tiny_model_names["rn"])
    assert rn.score_level == 3 and rn.decode_head.neck.lateral_convs[3].conv.in_channels == 256 + 32
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        text = model.encode_names(NAMES)
        pyramid = model.encode_image(images)
        out = model.decode(pyramid, text)
        context = visual_context(pyramid.global_embed, pyramid.dense)
        update = model.context_decoder(text[None], context)
    torch.testing.assert_close(out.text, text[None] + model.gamma * update)
    with torch.no_grad():
        dense = F.normalize(pyramid.dense, dim=1)
        t_hat = F.normalize(out.text, dim=-1)
    torch.testing.assert_close(out.score_map, torch.einsum("bdhw,bkd->bkhw", dense, t_hat))
    with pytest.raises(ConfigError):
        _segmentor(tiny_model_names["vit"], score_concat_index=4)
    with pytest.raises(ConfigError):
        DenseCLIPSegmentor(tiny_model_names["vit"], neck={"type": "SemanticFPN"})
    with pytest.raises(ConfigError):
        DenseCLIPSegmentor(tiny_model_names["vit"], decoder={"depth": 2})


def test_sliding_window_logits_average_the_windows(tiny_model_names):
    model = _segmentor(tiny_model_names["vit"]).eval()
    text = model.encode_names(NAMES).detach()
    image = torch.randn(1, 3, 32, 48)
    logits = slide_inference(
        lambda crops: model(crops, text).logits, image, mode="slide", crop_size=32, stride=16
    )
    assert logits.shape == (4, 32, 48)
    with torch.no_grad():
        left = F.interpolate(
            model(image[:, :, :, :32], text).logits, size=(32, 32), mode="bilinear"
        )
        right = F.interpolate(
            model(image[:, :, :, 16:], text).logits, size=(32, 32), mode="bilinear"
        )
    torch.testing.assert_close(logits[:, :, :16], left[0, :, :, :16], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        logits[:, :, 16:32], (left[0, :, :, 16:] + right[0, :, :, :16]) / 2, rtol=1e-4, atol=1e-5
    )
    whole = slide_inference(lambda crops: model(crops, text).logits, image, mode="whole")
    assert whole.shape == (4, 32, 48)
    with pytest.raises(ConfigError):
        slide_inference(lambda crops: model(crops, text).logits, image, mode="tiles")


def test_export_round_trip_and_mismatch(tiny_model_names, tmp_path):
    model = _segmentor(tiny_model_names["rn"], neck="UPerNet").eval()
    with torch.no_grad():
        model.gamma.fill_(0.5)
    path = export_segmentor(model, tmp_path / "m.safetensors", ["a", "b"])
    again = build_from_export(path)
    assert again.config == model.config and not again.training
    images, names = torch.randn(1, 3, 64, 64), ["red circle", "sky"]
    with torch.no_grad():  # the same weights and ops; default float32 tolerance (~1e-6)
        torch.testing.assert_close(
            again(images, again.encode_names(names)).logits,
            model(images, model.encode_names(names)).logits,
        )
    other = {**model.config, "num_contexts": 4}
    with pytest.raises(CheckpointError):
        build_from_export(path, model=other)
    plain = tmp_path / "plain.safetensors"
    from ovseg.weights import save_state_dict

    save_state_dict(model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="architecture"):
        build_from_export(plain)
