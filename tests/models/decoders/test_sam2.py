"""Sam2Decoder equals sam2.SAM2ImagePredictor on the same tiny random SAM 2.1 weights.

Both run the same modules on the same tensors in the same order (the decoder reuses sam2's
transforms and modules), so the results are compared for exact equality: no tolerance is
needed on any CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.errors import (
    CheckpointError,
    ConfigError,
    PromptError,
    UnsafeCheckpointError,
    WeightsNotFoundError,
)
from ovseg.models.decoders import MaskPrediction, Sam2Decoder
from ovseg.models.decoders.sam2 import fill_small_regions, small_regions
from ovseg.models.decoders.sam2_build import build_sam2_model, sam2_config
from ovseg.registry import MASK_DECODERS
from tests.models.decoders.sam2_tiny import (
    TINY_SAM2,
    reference_connected_components,
    reference_predictor,
    tiny_sam2,
)
from tests.models.decoders.sam_tiny import random_image

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    # sam2's predictor scripts its transforms with torch.jit, deprecated in recent torch
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]


@pytest.fixture(scope="module")
def setup():
    model = tiny_sam2(seed=2)
    image = random_image(40, 48, seed=1)  # not square: the resize stretches it
    decoder = Sam2Decoder.from_model(model)
    decoder.set_image(image)
    return decoder, reference_predictor(model, image), image


def _prompts(seed: int = 0):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 40, (4, 3, 2))
    labels = rng.integers(0, 2, (4, 3))
    labels[:, 0] = 1
    labels[1, 2] = -1  # padding
    x0, y0 = rng.uniform(0, 20, 4), rng.uniform(0, 18, 4)
    boxes = np.stack([x0, y0, x0 + rng.uniform(5, 27, 4), y0 + rng.uniform(5, 21, 4)], 1)
    return coords, labels, boxes


def _assert_equal(pred: MaskPrediction, i: int, reference) -> None:
    masks, iou, low_res = reference
    np.testing.assert_array_equal(pred.masks[i].numpy(), masks.astype(bool))
    np.testing.assert_array_equal(pred.iou_scores[i].numpy(), iou)
    np.testing.assert_array_equal(pred.low_res_logits[i].numpy(), low_res)


def test_image_embedding_equals_predictor(setup):
    decoder, predictor, _ = setup
    assert torch.equal(decoder.features, predictor._features["image_embed"])
    assert decoder.features.shape == (1, 32, 8, 8)
    for ours, theirs in zip(
        decoder.embedding.high_res_features, predictor._features["high_res_feats"], strict=True
    ):
        assert torch.equal(ours, theirs)
    assert decoder.image_size == (40, 48) and decoder.low_res_size == (32, 32)


@pytest.mark.parametrize("multimask", [True, False])
def test_points_equal_predictor(setup, multimask):
    decoder, predictor, _ = setup
    coords, labels, _ = _prompts()
    k = 3 if multimask else 1
    for i in range(4):  # one prompt per call: the predictor's unbatched path
        pred = decoder.predict(coords[i : i + 1], labels[i : i + 1], multimask=multimask)
        assert pred.masks.shape == (1, k, 40, 48) and pred.masks.dtype == torch.bool
        _assert_equal(pred, 0, predictor.predict(coords[i], labels[i], multimask_output=multimask))
        assert pred.masks.any() and not pred.masks.all()


@pytest.mark.parametrize("multimask", [True, False])
def test_batched_points_and_boxes_equal_predictor(setup, multimask):
    decoder, predictor, _ = setup
    coords, labels, boxes = _prompts(1)
    cases = [
        (decoder.predict(coords, labels, multimask=multimask), {"point_coords": coords}),
        (decoder.predict(boxes=boxes, multimask=multimask), {"box": boxes}),
        (
            decoder.predict(coords, labels, boxes=boxes, multimask=multimask),
            {"point_coords": coords, "box": boxes},
        ),
    ]
    for pred, prompts in cases:
        if "point_coords" in prompts:
            prompts["point_labels"] = labels
        reference = predictor.predict(**prompts, multimask_output=multimask)
        for i in range(4):
            _assert_equal(pred, i, [r[i] for r in reference])


def test_single_box_and_mask_input_round_trip(setup):
    decoder, predictor, _ = setup
    coords, labels, boxes = _prompts(2)
    box = boxes[0]
    single = decoder.predict(boxes=box, multimask=False)
    reference = predictor.predict(box=box, multimask_output=False)
    _assert_equal(single, 0, reference)
    again = decoder.predict(
        coords[:1], labels[:1], mask_input=single.low_res_logits[:, :1], multimask=False
    )
    _assert_equal(
        again,
        0,
        predictor.predict(
            coords[0], labels[0], mask_input=reference[2][:1], multimask_output=False
        ),
    )
    # (N, h, w) masks alone, for N > 1 (the predictor's decoder call needs a point for that)
    only_masks = decoder.predict(mask_input=single.low_res_logits[:, 0].repeat(2, 1, 1))
    assert only_masks.masks.shape == (2, 3, 40, 48)
    assert torch.equal(only_masks.iou_scores[0], only_masks.iou_scores[1])


def test_small_regions_match_flood_fill():
    rng = np.random.default_rng(0)
    binary = torch.from_numpy(rng.random((3, 2, 12, 14)) > 0.6)
    labels, areas = reference_connected_components(binary.flatten(0, 1)[:, None])
    expected = ((labels > 0) & (areas <= 3)).reshape(binary.shape)
    assert torch.equal(small_regions(binary, 3), expected)
    assert expected.any() and (binary & ~expected).any()
    logits = torch.randn(2, 1, 10, 10)
    filled = fill_small_regions(logits, 0.0, 0.0, 0.0)
    assert torch.equal(filled, logits)


def test_region_clean_up_equals_predictor_with_cuda_components(setup, monkeypatch):
    """With max_hole_area / max_sprinkle_area sam2 labels regions in its CUDA extension; given
    the same labelling on the CPU its predictor must agree with ours."""
    import sam2.utils.misc

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", reference_connected_components)
    decoder, _, image = setup
    coords, labels, _ = _prompts(4)
    cleaned = Sam2Decoder.from_model(decoder.model, max_hole_area=6, max_sprinkle_area=4)
    cleaned.set_image(image)
    predictor = reference_predictor(decoder.model, image, max_hole_area=6, max_sprinkle_area=4)
    changed = False
    for i in range(2):
        pred = cleaned.predict(coords[i : i + 1], labels[i : i + 1])
        _assert_equal(pred, 0, predictor.predict(coords[i], labels[i]))
        plain = decoder.predict(coords[i : i + 1], labels[i : i + 1])
        changed |= not torch.equal(pred.masks, plain.masks)
    assert changed  # the clean-up did something on these masks


def test_prompt_errors_and_image_state(setup):
    decoder, _, image = setup
    coords, labels, boxes = _prompts()
    with pytest.raises(PromptError, match="together"):
        decoder.predict(point_coords=coords)
    with pytest.raises(PromptError, match="differ in size"):
        decoder.predict(coords, labels, boxes=boxes[:2])
    with pytest.raises(PromptError, match="low-resolution"):
        decoder.predict(mask_input=np.zeros((1, 1, 16, 16)))
    empty = decoder.predict(np.zeros((0, 1, 2)), np.zeros((0, 1)))
    assert empty.masks.shape == (0, 3, 40, 48) and empty.low_res_logits.shape == (0, 3, 32, 32)
    fresh = Sam2Decoder.from_model(decoder.model)
    with pytest.raises(PromptError, match="set_image"):
        fresh.predict(boxes=boxes)


# ---------------------------------------------------------------------------- checkpoints
class _OpenFile:
    """A pickled call of open(): what a tampered checkpoint would run on torch.load."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_official_layout_checkpoint_loads_strictly(tmp_path, setup):
    decoder, _, image = setup
    path = tmp_path / "sam2.1_hiera_tiny_test.pt"
    torch.save({"model": decoder.model.state_dict()}, path)  # the released files' layout
    built = MASK_DECODERS.build(
        {
            "type": "Sam2Decoder",
            "model_type": "sam2.1_hiera_t",
            "overrides": TINY_SAM2,
            "checkpoint": str(path),
            "multimask": False,
        }
    )
    assert isinstance(built, Sam2Decoder) and built.multimask is False
    for key, value in decoder.model.state_dict().items():
        assert torch.equal(built.model.state_dict()[key], value), key
    built.set_image(image)
    assert torch.equal(built.features, decoder.features)


def test_tampered_and_mismatched_checkpoints_are_refused(tmp_path, setup):
    decoder, _, _ = setup
    state = decoder.model.state_dict()
    pwned = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": state, "extra": _OpenFile(pwned)}, evil)
    with pytest.raises(UnsafeCheckpointError):
        Sam2Decoder("sam2.1_hiera_t", checkpoint=evil, overrides=TINY_SAM2)
    assert not pwned.exists()
    cases = {
        "missing.pt": ({k: v for k, v in state.items() if k != "no_mem_embed"}, "no_mem_embed"),
        # one more Hiera block than the architecture has
        "deeper.pt": (
            {
                **state,
                **{
                    k.replace("trunk.blocks.5.", "trunk.blocks.6."): v
                    for k, v in state.items()
                    if k.startswith("image_encoder.trunk.blocks.5.")
                },
            },
            "unexpected keys \\['image_encoder.trunk.blocks.6.",
        ),
        # a different prompt width in one tensor
        "wider.pt": (
            {**state, "sam_mask_decoder.iou_token.weight": torch.zeros(1, 64)},
            "shapes differ for sam_mask_decoder.iou_token.weight",
        ),
    }
    for name, (weights, message) in cases.items():
        torch.save({"model": weights}, tmp_path / name)
        with pytest.raises(CheckpointError, match=message):
            Sam2Decoder("sam2.1_hiera_t", checkpoint=tmp_path / name, overrides=TINY_SAM2)


def test_missing_release_weights_name_file_repo_and_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError) as info:
        Sam2Decoder("sam2.1_hiera_large")
    message = str(info.value)
    assert "sam2.1_hiera_large.pt" in message and "facebook/sam2.1-hiera-large" in message
    assert "checkpoint: PATH" in message and str(tmp_path / "hub" / "checkpoints") in message
    with pytest.raises(WeightsNotFoundError, match="sam2.1_hiera_base_plus.pt"):
        Sam2Decoder("sam2.1_hiera_b+", checkpoint=tmp_path / "absent.pt")


def test_configs_of_the_release_and_bad_configs(tmp_path):
    large = sam2_config("sam2.1_hiera_l")
    assert list(large.model.image_encoder.trunk.stages) == [2, 6, 36, 4]
    assert large.model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability is True
    assert sam2_config("sam2.1_hiera_b+").model.image_encoder.trunk.embed_dim == 112
    with pytest.raises(ConfigError, match="Unknown SAM 2 model_type"):
        sam2_config("sam2.1_hiera_xl")
    evil = tmp_path / "evil.yaml"
    evil.write_text("model:\n  _target_: os.system\n  command: touch pwned\n")
    with pytest.raises(ConfigError, match="only classes of the sam2 package"):
        sam2_config(evil)


def test_built_as_sam2s_build_sam2_builds_it():
    """The same config (release file, build_sam2's post-processing, the overrides) and the same
    instantiation: under one seed every random weight is the same."""
    from sam2.build_sam import build_sam2

    def value(v):
        return "[" + ",".join(str(x) for x in v) + "]" if isinstance(v, list) else str(v)

    torch.manual_seed(7)
    reference = build_sam2(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        ckpt_path=None,
        device="cpu",
        hydra_overrides_extra=[f"++{k}={value(v)}" for k, v in TINY_SAM2.items()],
    )
    torch.manual_seed(7)
    ours = build_sam2_model("sam2.1_hiera_t", overrides=TINY_SAM2, random_init=True)
    theirs = reference.state_dict()
    assert list(ours.state_dict()) == list(theirs)
    for key, tensor in ours.state_dict().items():
        assert torch.equal(tensor, theirs[key]), key
    assert ours.sam_mask_decoder.dynamic_multimask_via_stability
    assert ours.sam_mask_decoder.dynamic_multimask_stability_thresh == 0.98
    assert not ours.training
