from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ovseg.errors import ConfigError
from ovseg.models.multimodal.conversation import (
    collate_conversations,
    encode_conversation,
    encode_prompt,
    image_question,
)
from ovseg.models.multimodal.lora import add_lora
from ovseg.models.prompts.sasp import SasPSelector
from ovseg.models.prompts.similarity import GridPlacement
from tests.models.multimodal.read_tiny import script_language_model

QUESTION = "What is the largest object ? Please segment it ."


def image(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def scripted(tiny_read, successor):
    model, tok = tiny_read
    model = copy.deepcopy(model)
    script_language_model(model, tok, successor)
    return model, tok


def test_kv_cache_generation_equals_full_recomputation(tiny_read):
    model, tok = tiny_read
    model = copy.deepcopy(model)
    model.eos_token_id = None  # run the full length
    with torch.no_grad():  # make [SEG] likely enough to appear in a random model's answer
        model.mllm.language_model.lm_head.weight[model.seg_token_idx] *= 4.0
    ids = encode_prompt(QUESTION, tok)
    cached = model.generate(image(), ids, max_new_tokens=8, tokenizer=tok)
    full = model.generate(image(), ids, max_new_tokens=8, tokenizer=tok, use_cache=False)
    assert len(cached.output_ids) == 8 and not cached.stopped_at_eos
    assert cached.output_ids == full.output_ids
    assert cached.text == full.text
    assert len(cached.segments) == len(full.segments) > 0
    for a, b in zip(cached.segments, full.segments):
        np.testing.assert_allclose(a.similarity, b.similarity, rtol=1e-4, atol=1e-4)
        assert np.array_equal(a.points.labels, b.points.labels)


def test_several_seg_tokens_give_several_masks(tiny_read):
    model, tok = scripted(tiny_read, {":": "[SEG]", "[SEG]": "and", "and": "[SEG]"})
    picture = image(40, 56)
    out = model.generate(picture, encode_prompt(QUESTION, tok), max_new_tokens=4, tokenizer=tok)
    assert out.text == "[SEG] and [SEG] and"
    assert [s.token_index for s in out.segments] == [0, 2]
    for seg in out.segments:
        assert seg.mask.shape == (40, 56) and seg.mask.dtype == bool
        assert seg.similarity.shape == (4, 4)
        assert 0 < len(seg.points) <= model.selector.num_points
        assert np.isfinite(seg.score)
    # the two [SEG]s follow different tokens (":" and "and"): different queries, different grids
    assert not np.allclose(out.segments[0].similarity, out.segments[1].similarity)


def test_seg_points_are_sasp_of_the_hidden_states(tiny_read):
    """The points are SasPSelector(compat="read") of the [SEG]-to-image-token dot products on
    LLaVA's centre crop, the [SEG] state being the one that predicts it."""
    model, tok = scripted(tiny_read, {":": "[SEG]", "[SEG]": "and", "and": "[SEG]"})
    picture = image(40, 56)
    ids = encode_prompt(QUESTION, tok)
    out = model.generate(picture, ids, max_new_tokens=1)
    prepared = model.prepare_image(picture)
    with torch.no_grad():
        spliced = model.mllm.splice(ids[None], prepared.clip_pixels[None])
        hidden, _, _ = model.mllm.decode(spliced.inputs_embeds)
    start = spliced.image_starts[0]
    image_hidden = hidden[0, start : start + 16]
    expected_grid = (image_hidden @ hidden[0, -1]).reshape(4, 4)
    np.testing.assert_allclose(
        out.segments[0].similarity, expected_grid.numpy(), rtol=1e-5, atol=1e-5
    )
    expected = SasPSelector(compat="read")(expected_grid, GridPlacement.center_crop(40, 56))
    np.testing.assert_allclose(out.segments[0].points.coords, expected.coords, atol=1e-3)
    assert np.array_equal(out.segments[0].points.labels, expected.labels)


def test_answer_without_seg_is_text_only(tiny_read):
    model, tok = scripted(tiny_read, {":": "no", "no": "</s>"})
    out = model.generate(image(), encode_prompt(QUESTION, tok), max_new_tokens=8, tokenizer=tok)
    assert out.text == "no" and out.stopped_at_eos
    assert out.segments == []


def test_unexpected_image_size_is_resized(tiny_read):
    model, _ = tiny_read
    prepared = model.prepare_image(image(23, 91))
    assert prepared.clip_pixels.shape == (3, 32, 32)
    assert prepared.sam_pixels.shape == (3, 64, 64)
    assert prepared.input_size == (16, 64) and prepared.original_size == (23, 91)


def batch(tok, seg_id):
    first = encode_conversation(
        [(image_question("What is the red star ?"), "Sure , it is [SEG] .")], tok
    )
    second = encode_conversation(
        [(image_question("Please segment the largest object"), "[SEG] and [SEG] .")], tok
    )
    third = encode_conversation([(image_question("What is it ?"), "It is a star .")], tok)
    ids, mask, labels = collate_conversations([first, second, third], tok.pad_token_id)
    return ids, mask, labels


def test_forward_losses_and_gradients(tiny_read):
    model, tok = tiny_read
    model = copy.deepcopy(model).train()
    names = add_lora(model, r=4, alpha=8, dropout=0.0)
    assert names and all(n.endswith(("q_proj", "v_proj")) for n in names)
    ids, mask, labels = batch(tok, model.seg_token_idx)
    pics = [image(40, 56, 1), image(30, 30, 2)]
    prepared = [model.prepare_image(p) for p in pics]
    rng = np.random.default_rng(0)
    masks_list = [
        torch.from_numpy(rng.random((1, 40, 56)) > 0.5).float(),
        torch.from_numpy(rng.random((2, 30, 30)) > 0.5).float(),
    ]
    out = model(
        images_clip=torch.stack([p.clip_pixels for p in prepared]),
        input_ids=ids,
        labels=labels,
        attention_masks=mask,
        offset=torch.tensor([0, 1, 3]),
        masks_list=masks_list,
        sam_mask_shape_list=[(p.input_size, p.original_size) for p in prepared],
        images=torch.stack([p.sam_pixels for p in prepared]),
    )
    for key in ("loss", "ce_loss", "mask_bce_loss", "mask_dice_loss", "mask_loss"):
        assert torch.isfinite(out[key]) and out[key].ndim == 0, key
    assert float(out["mask_bce_loss"].detach()) > 0 and float(out["mask_dice_loss"].detach()) > 0
    torch.testing.assert_close(out["loss"], out["ce_loss"] + out["mask_loss"])
    assert [m.shape for m in out["pred_masks"]] == [(1, 40, 56), (2, 30, 30)]
    out["loss"].backward()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    for p in model.text_hidden_fcs.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    base = model.mllm.language_model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert base.grad is None  # LoRA freezes the base weights


def test_forward_with_cached_sam_embeddings_matches(tiny_read):
    model, tok = tiny_read
    ids, mask, labels = batch(tok, model.seg_token_idx)
    prepared = [model.prepare_image(image(40, 56, 1)), model.prepare_image(image(30, 30, 2))]
    masks_list = [torch.ones(1, 40, 56), torch.zeros(2, 30, 30)]
    common = dict(
        images_clip=torch.stack([p.clip_pixels for p in prepared]),
        input_ids=ids,
        labels=labels,
        attention_masks=mask,
        offset=[0, 1, 3],
        masks_list=masks_list,
        sam_mask_shape_list=[(p.input_size, p.original_size) for p in prepared],
    )
    sam_pixels = torch.stack([p.sam_pixels for p in prepared])
    with torch.no_grad():
        direct = model(**common, images=sam_pixels)
        cached = model(**common, image_embeddings=model.sam_image_embeddings(sam_pixels))
    torch.testing.assert_close(direct["loss"], cached["loss"])
    with pytest.raises(ConfigError, match="one mask per"):
        model(**{**common, "masks_list": [torch.ones(2, 40, 56), masks_list[1]]}, images=sam_pixels)
    with pytest.raises(ConfigError, match="SAM's inputs"):
        model(**common)


def test_loss_weights_scale_their_terms(tiny_read):
    model, tok = tiny_read
    heavy = copy.deepcopy(model)
    heavy.ce_loss_weight, heavy.bce_loss_weight, heavy.dice_loss_weight = 2.0, 4.0, 1.0
    ids, mask, labels = batch(tok, model.seg_token_idx)
    prepared = [model.prepare_image(image(40, 56, 1)), model.prepare_image(image(30, 30, 2))]
    args = dict(
        images_clip=torch.stack([p.clip_pixels for p in prepared]),
        input_ids=ids,
        labels=labels,
        attention_masks=mask,
        offset=[0, 1, 3],
        masks_list=[torch.ones(1, 40, 56), torch.zeros(2, 30, 30)],
        sam_mask_shape_list=[(p.input_size, p.original_size) for p in prepared],
        images=torch.stack([p.sam_pixels for p in prepared]),
    )
    with torch.no_grad():
        a, b = model(**args), heavy(**args)
    for key in ("ce_loss", "mask_bce_loss", "mask_dice_loss"):
        torch.testing.assert_close(b[key], 2 * a[key])
