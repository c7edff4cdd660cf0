"""SamDecoder equals segment_anything.SamPredictor on the same tiny random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from ovseg.errors import PromptError, WeightsNotFoundError
from ovseg.models.decoders import MaskPrediction, SamDecoder
from ovseg.registry import MASK_DECODERS
from ovseg.weights import save_state_dict
from tests.models.decoders.sam_tiny import TINY_SAM, TINY_WINDOWED_SAM, random_image, tiny_sam
from tests.tolerance import assert_close_to_scale, assert_threshold_matches

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# One batched decoder call vs one call per prompt (or segment_anything's own batching): the same
# float32 arithmetic summed in another order. IoU scores are O(1): 1e-5 is ~100 float32 ulps
# (measured <= 2e-7 with MKL's AVX-512, AVX2 and SSE paths). Mask logits reach ~80 and are
# sums of large cancelling terms (the tiny model's hypernetwork output is scaled x300), so
# their error scales with the logits' magnitude: measured <= 1.2e-6 of max|logit| on Intel
# (all ISA paths) and 1.2e-5 on an AMD EPYC; LOGIT_RTOL bounds it at 1e-4 of max|logit|, far
# below what a wrong prompt, mask input or resize would change (O(1) of the scale).
ATOL = 1e-5
LOGIT_RTOL = 1e-4


@pytest.fixture(scope="module")
def setup():
    sam = tiny_sam(seed=2)
    image = random_image(40, 48, seed=1)  # not square: resize, padding and crop-back all matter
    decoder = SamDecoder.from_model(sam)
    decoder.set_image(image)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    return decoder, predictor, image


def _prompts(seed: int = 0):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 40, (4, 3, 2))
    labels = rng.integers(0, 2, (4, 3))
    labels[:, 0] = 1
    labels[1, 2] = -1  # padding
    x0, y0 = rng.uniform(0, 20, 4), rng.uniform(0, 18, 4)
    boxes = np.stack([x0, y0, x0 + rng.uniform(5, 27, 4), y0 + rng.uniform(5, 21, 4)], 1)
    return coords, labels, boxes


def _reference(predictor: SamPredictor, *args, **kwargs):
    """``SamPredictor.predict`` with the full-size logits instead of masks (masks: logits > 0)."""
    return predictor.predict(*args, return_logits=True, **kwargs)


def _assert_matches_predict(pred: MaskPrediction, i: int, reference) -> None:
    logits, iou, low_res = reference
    assert_close_to_scale(pred.low_res_logits[i], low_res, LOGIT_RTOL, "low-res logits")
    np.testing.assert_allclose(pred.iou_scores[i].numpy(), iou, rtol=0, atol=ATOL)
    # a pixel whose logit is within the logits' error bound of 0 may round either way
    margin = LOGIT_RTOL * float(np.abs(logits).max())
    unsure = assert_threshold_matches(pred.masks[i], logits, margin)
    assert unsure <= 0.01 * logits.size  # the comparison is not vacuous


def test_image_embedding_equals_predictor(setup):
    decoder, predictor, image = setup
    assert torch.equal(decoder.features, predictor.features)
    assert decoder.image_size == (40, 48) == predictor.original_size
    assert decoder.embedding.input_size == predictor.input_size == (53, 64)


@pytest.mark.parametrize("multimask", [True, False])
def test_points_equal_predictor_predict(setup, multimask):
    decoder, predictor, _ = setup
    coords, labels, _ = _prompts()
    pred = decoder.predict(coords, labels, multimask=multimask)
    k = 3 if multimask else 1
    assert pred.masks.shape == (4, k, 40, 48) and pred.masks.dtype == torch.bool
    assert pred.iou_scores.shape == (4, k) and pred.low_res_logits.shape == (4, k, 32, 32)
    for i in range(4):
        reference = _reference(predictor, coords[i], labels[i], multimask_output=multimask)
        _assert_matches_predict(pred, i, reference)
    assert pred.masks.any() and not pred.masks.all()


@pytest.mark.parametrize("multimask", [True, False])
def test_boxes_and_points_with_boxes_equal_predictor(setup, multimask):
    decoder, predictor, _ = setup
    coords, labels, boxes = _prompts(1)
    boxes_only = decoder.predict(boxes=boxes, multimask=multimask)
    both = decoder.predict(coords, labels, boxes=boxes, multimask=multimask)
    for i in range(4):
        _assert_matches_predict(
            boxes_only, i, _reference(predictor, box=boxes[i], multimask_output=multimask)
        )
        _assert_matches_predict(
            both,
            i,
            _reference(predictor, coords[i], labels[i], boxes[i], multimask_output=multimask),
        )


def test_mask_input_round_trip_equals_predictor(setup):
    decoder, predictor, _ = setup
    coords, labels, _ = _prompts(2)
    first = decoder.predict(coords, labels, multimask=False)
    again = decoder.predict(coords, labels, mask_input=first.low_res_logits, multimask=False)
    for i in range(4):
        reference = _reference(
            predictor,
            coords[i],
            labels[i],
            mask_input=first.low_res_logits[i].numpy(),
            multimask_output=False,
        )
        _assert_matches_predict(again, i, reference)
    only_masks = decoder.predict(mask_input=first.low_res_logits[:, 0])  # (N, h, w) is accepted
    assert only_masks.masks.shape == (4, 3, 40, 48)


def test_batched_prompts_equal_predict_torch(setup):
    decoder, predictor, _ = setup
    coords, labels, boxes = _prompts(3)
    size = predictor.original_size
    coords_t = predictor.transform.apply_coords_torch(torch.as_tensor(coords), size)
    boxes_t = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes), size)
    logits, iou, low_res = predictor.predict_torch(
        coords_t.float(),
        torch.as_tensor(labels),
        boxes_t.float(),
        multimask_output=True,
        return_logits=True,
    )
    # torch inputs (and integer labels of any dtype) as well as numpy
    pred = decoder.predict(
        torch.as_tensor(coords, dtype=torch.float32).double(),
        torch.as_tensor(labels, dtype=torch.int32),
        torch.as_tensor(boxes),
    )
    for i in range(len(coords)):
        _assert_matches_predict(pred, i, (logits[i].numpy(), iou[i].numpy(), low_res[i].numpy()))


def test_default_multimask_and_single_box(setup):
    decoder, predictor, _ = setup
    single = SamDecoder.from_model(decoder.model, multimask=False)
    single.set_image(setup[2])
    box = np.array([5.0, 6.0, 30.0, 33.0])
    pred = single.predict(boxes=box)
    assert pred.masks.shape == (1, 1, 40, 48)
    _assert_matches_predict(pred, 0, _reference(predictor, box=box, multimask_output=False))
    assert single.predict(boxes=box, multimask=True).masks.shape == (1, 3, 40, 48)
    empty = decoder.predict(np.zeros((0, 1, 2)), np.zeros((0, 1)))
    assert empty.masks.shape == (0, 3, 40, 48) and empty.iou_scores.shape == (0, 3)


def test_windowed_encoder_equals_predictor():
    sam = tiny_sam(seed=5, config=TINY_WINDOWED_SAM)
    image = random_image(64, 30, seed=2)  # tall: padding on the right
    decoder, predictor = SamDecoder.from_model(sam), SamPredictor(sam)
    decoder.set_image(image)
    predictor.set_image(image)
    assert torch.equal(decoder.features, predictor.features)
    coords, labels = np.array([[[10.0, 40.0]]]), np.array([[1]])
    _assert_matches_predict(
        decoder.predict(coords, labels), 0, _reference(predictor, coords[0], labels[0])
    )


def test_prompt_errors(setup):
    decoder, _, _ = setup
    coords, labels, boxes = _prompts()
    with pytest.raises(PromptError, match="together"):
        decoder.predict(point_coords=coords)
    with pytest.raises(PromptError, match=r"\(1, P, 2\)"):
        decoder.predict(coords[0], labels[0])
    with pytest.raises(PromptError, match=r"\(N, P\)"):
        decoder.predict(coords, labels[:, :2])
    with pytest.raises(PromptError, match="1 \\(foreground\\)"):
        decoder.predict(coords, labels + 2)
    with pytest.raises(PromptError, match="differ in size"):
        decoder.predict(coords, labels, boxes=boxes[:2])
    with pytest.raises(PromptError, match=r"\(N, 4\)"):
        decoder.predict(boxes=boxes[:, :3])
    with pytest.raises(PromptError, match="NaN"):
        decoder.predict(boxes=np.full((1, 4), np.nan))
    with pytest.raises(PromptError, match="low-resolution"):
        decoder.predict(mask_input=np.zeros((1, 1, 16, 16)))
    with pytest.raises(PromptError, match="at least one prompt"):
        decoder.predict()
    fresh = SamDecoder.from_model(decoder.model)
    with pytest.raises(PromptError, match="set_image"):
        fresh.predict(boxes=boxes)
    fresh.set_image(setup[2])
    fresh.reset_image()
    assert not fresh.is_image_set
    with pytest.raises(PromptError, match="set_image"):
        _ = fresh.image_size


def test_registered_and_built_from_a_checkpoint(tmp_path, setup):
    decoder, _, image = setup
    path = save_state_dict(decoder.model.state_dict(), tmp_path / "tiny.safetensors")
    built = MASK_DECODERS.build(
        {"type": "SamDecoder", "model_type": TINY_SAM, "checkpoint": str(path), "multimask": False}
    )
    assert isinstance(built, SamDecoder) and built.multimask is False
    built.set_image(image)
    assert torch.equal(built.features, decoder.features)
    with pytest.raises(WeightsNotFoundError, match="no default weights"):
        SamDecoder(model_type=TINY_SAM)
