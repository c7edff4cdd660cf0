"""HqSamDecoder equals segment_anything_hq.SamPredictor on the same tiny random HQ-SAM.

Same modules, same inputs, same order (one prompt per call, as the predictor takes them):
the results are compared for exact equality.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ovseg.errors import CheckpointError, UnsafeCheckpointError, WeightsNotFoundError
from ovseg.models.decoders.sam_hq import HqSamDecoder, build_sam_hq
from ovseg.registry import MASK_DECODERS
from tests.models.decoders.sam_tiny import TINY_SAM, random_image

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # timm deprecation / re-registration notices on import
    from segment_anything_hq import SamAutomaticMaskGenerator as HqAutomaticMaskGenerator
    from segment_anything_hq import SamPredictor as HqPredictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_sam_hq(seed: int = 1):
    """A random tiny HQ-SAM whose SAM and HQ masks both reach a few logit units."""
    torch.manual_seed(seed)
    model = build_sam_hq(TINY_SAM, random_init=True)
    decoder = model.mask_decoder
    with torch.no_grad():
        for mlp in [*decoder.output_hypernetworks_mlps, decoder.hf_mlp]:
            mlp.layers[-1].weight.mul_(300.0)
        head = decoder.iou_prediction_head.layers[-1]
        head.weight.mul_(2.0)
        head.bias.add_(0.5)
    return model


@pytest.fixture(scope="module")
def setup():
    model = tiny_sam_hq(seed=2)
    image = random_image(40, 48, seed=1)
    predictor = HqPredictor(model)
    predictor.set_image(image)
    return model, predictor, image


def _prompts(seed: int = 0):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 40, (3, 2, 2))
    labels = rng.integers(0, 2, (3, 2))
    labels[:, 0] = 1
    x0, y0 = rng.uniform(0, 20, 3), rng.uniform(0, 18, 3)
    boxes = np.stack([x0, y0, x0 + rng.uniform(5, 27, 3), y0 + rng.uniform(5, 21, 3)], 1)
    return coords, labels, boxes


@pytest.mark.parametrize("hq_token_only", [False, True])
@pytest.mark.parametrize("multimask", [True, False])
def test_prompts_equal_hq_predictor(setup, multimask, hq_token_only):
    model, predictor, image = setup
    decoder = HqSamDecoder.from_model(model, hq_token_only=hq_token_only)
    decoder.set_image(image)
    assert torch.equal(decoder.features, predictor.features)
    coords, labels, boxes = _prompts()
    for i in range(3):
        cases = [
            ({"point_coords": coords[i : i + 1], "point_labels": labels[i : i + 1]}, {}),
            ({"boxes": boxes[i]}, {}),
            ({"point_coords": coords[i : i + 1], "point_labels": labels[i : i + 1]}, {"box": 1}),
        ]
        for ours_args, extra in cases:
            if extra:
                ours_args = {**ours_args, "boxes": boxes[i]}
            pred = decoder.predict(**ours_args, multimask=multimask)
            assert pred.masks.shape == (1, 1, 40, 48)  # HQ-SAM: one mask per prompt
            masks, iou, low_res = predictor.predict(
                ours_args.get("point_coords", [None])[0],
                ours_args.get("point_labels", [None])[0],
                ours_args.get("boxes"),
                multimask_output=multimask,
                hq_token_only=hq_token_only,
            )
            np.testing.assert_array_equal(pred.masks[0].numpy(), masks)
            np.testing.assert_array_equal(pred.iou_scores[0].numpy(), iou)
            np.testing.assert_array_equal(pred.low_res_logits[0].numpy(), low_res)
            assert masks.any() and not masks.all()


def test_hq_token_changes_the_masks_and_mask_input_round_trip(setup):
    model, predictor, image = setup
    coords, labels, _ = _prompts(1)
    both = HqSamDecoder.from_model(model)
    hq_only = HqSamDecoder.from_model(model, hq_token_only=True)
    for decoder in (both, hq_only):
        decoder.set_image(image)
    first = both.predict(coords[:1], labels[:1])
    assert not torch.equal(
        first.low_res_logits, hq_only.predict(coords[:1], labels[:1]).low_res_logits
    )
    again = both.predict(coords[:1], labels[:1], mask_input=first.low_res_logits)
    _, iou, low_res = predictor.predict(
        coords[0], labels[0], mask_input=first.low_res_logits[0].numpy()
    )
    np.testing.assert_array_equal(again.low_res_logits[0].numpy(), low_res)
    np.testing.assert_array_equal(again.iou_scores[0].numpy(), iou)


def test_generate_equals_hq_generator(setup):
    model, _, image = setup
    settings = {
        "points_per_side": 5,
        "points_per_batch": 8,
        "pred_iou_thresh": 0.75,
        "stability_score_thresh": 0.86,
        "box_nms_thresh": 1.0,  # scattered random masks: every box covers the image
    }
    records = HqAutomaticMaskGenerator(model, **settings).generate(image)
    ours = HqSamDecoder.from_model(model).generate(image, **settings)
    assert 1 < len(records) == len(ours) < 25
    np.testing.assert_array_equal(
        ours.masks.numpy(), np.stack([r["segmentation"] for r in records])
    )
    np.testing.assert_array_equal(
        ours.iou_scores.numpy(), np.array([r["predicted_iou"] for r in records], np.float32)
    )


def test_checkpoints_load_strictly_through_the_safe_loader(tmp_path, setup):
    model, _, image = setup
    state = model.state_dict()
    path = tmp_path / "sam_hq_tiny.pth"
    torch.save(state, path)  # the release's layout: a plain state dict
    built = MASK_DECODERS.build(
        {"type": "HqSamDecoder", "model_type": TINY_SAM, "checkpoint": str(path)}
    )
    assert isinstance(built, HqSamDecoder) and built.hq_token_only is False
    for key, value in state.items():
        assert torch.equal(built.model.state_dict()[key], value), key

    class OpenFile:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    torch.save({**state, "payload": OpenFile()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError):
        HqSamDecoder(TINY_SAM, checkpoint=tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()
    # a plain SAM checkpoint lacks the HQ parts: the missing keys are named
    plain = {k: v for k, v in state.items() if "hf_" not in k and "compress_vit" not in k}
    torch.save(plain, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="mask_decoder.compress_vit_feat|hf_"):
        HqSamDecoder(TINY_SAM, checkpoint=tmp_path / "plain.pth")


def test_vit_tiny_is_the_release_architecture():
    """The TinyViT variant (1024 px only) has the release's modules; a forward pass at 1024 px
    takes too long for this suite, the adapter path is the one tested above."""
    from segment_anything_hq import sam_model_registry

    torch.manual_seed(0)
    ours = build_sam_hq("vit_tiny", random_init=True)
    assert ours.mask_decoder.compress_vit_feat[0].in_channels == 160
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = sam_model_registry["vit_tiny"]()
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert ours_shapes == {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def test_missing_release_weights_name_file_and_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError) as info:
        HqSamDecoder("vit_h")
    message = str(info.value)
    assert "sam_hq_vit_h.pth" in message and "lkeab/hq-sam" in message
    assert "checkpoint: PATH" in message
    with pytest.raises(WeightsNotFoundError, match="sam_hq_vit_tiny.pth"):
        HqSamDecoder("vit_tiny", checkpoint=tmp_path / "absent.pth")


def test_sdpa_attention_keeps_the_hq_embedding_and_its_early_features():
    model = tiny_sam_hq(seed=3)
    with torch.no_grad():
        for name, parameter in model.image_encoder.named_parameters():
            if "rel_pos" in name:
                parameter.copy_(torch.randn(parameter.shape))
    native = HqSamDecoder.from_model(model)
    fused = HqSamDecoder.from_model(model, attention="sdpa")
    image = random_image(40, 48, seed=1)
    a, b = native.embed(image), fused.embed(image)
    torch.testing.assert_close(b.features, a.features, rtol=1e-4, atol=1e-5)
    assert len(b.high_res_features) == len(a.high_res_features) > 0
    for x, y in zip(b.high_res_features, a.high_res_features, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
