from __future__ import annotations

import pytest
import torch

from ovseg.errors import PromptError
from ovseg.models.multimodal.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from ovseg.models.multimodal.conversation import (
    LLAVA_V1_SYSTEM,
    build_prompt,
    collate_conversations,
    count_seg_tokens,
    encode_conversation,
    encode_prompt,
    image_question,
    tokenize_with_image,
)
from tests.models.multimodal.read_tiny import tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_llava_v1_text():
    question = image_question("What is the red star?")
    assert question == "<im_start><image><im_end>\nWhat is the red star?"
    assert image_question("Q", use_im_start_end=False) == "<image>\nQ"
    assert build_prompt([(question, None)]) == (f"{LLAVA_V1_SYSTEM} USER: {question} ASSISTANT:")
    assert build_prompt([(question, "Sure, it is [SEG]."), ("And?", None)]) == (
        f"{LLAVA_V1_SYSTEM} USER: {question} ASSISTANT: Sure, it is [SEG].</s>USER: And? ASSISTANT:"
    )
    with pytest.raises(PromptError):
        build_prompt([("a", None), ("b", None)])


def test_image_placeholder_and_bos(tok):
    ids = tokenize_with_image("the <im_start><image><im_end>\nred star", tok)
    names = tok.convert_ids_to_tokens([i for i in ids if i >= 0])
    assert ids[0] == tok.bos_token_id
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    position = ids.index(IMAGE_TOKEN_INDEX)
    assert tok.convert_ids_to_tokens(ids[position - 1]) == "<im_start>"
    assert tok.convert_ids_to_tokens(ids[position + 1]) == "<im_end>"
    assert names == ["<s>", "the", "<im_start>", "<im_end>", "red", "star"]


def test_labels_keep_only_answers(tok):
    turns = [
        (image_question("What is the red star ?"), "Sure , it is [SEG] ."),
        ("Please segment the largest object", "It is [SEG] ."),
    ]
    encoded = encode_conversation(turns, tok)
    labelled = [int(t) for t, lab in zip(encoded.input_ids, encoded.labels) if lab != IGNORE_INDEX]
    assert tok.convert_ids_to_tokens(labelled) == (
        "Sure , it is [SEG] . </s> It is [SEG] . </s>".split()
    )
    kept = encoded.labels != IGNORE_INDEX
    assert torch.equal(encoded.labels[kept], encoded.input_ids[kept])
    assert count_seg_tokens(encoded.input_ids, tok.convert_tokens_to_ids("[SEG]")) == 2
    with pytest.raises(PromptError):
        encode_conversation([(image_question("Q"), None)], tok)


def test_training_truncation_warns_and_cuts_the_end(tok):
    turns = [(image_question("What is the red star ?"), "Sure , it is [SEG] .")]
    full = encode_conversation(turns, tok)
    with pytest.warns(UserWarning, match="cut"):
        short = encode_conversation(
            turns, tok, max_length=len(full.input_ids) + 10 - 3, num_image_tokens=11
        )
    assert short.truncated and len(short.input_ids) == len(full.input_ids) - 3
    assert torch.equal(short.input_ids, full.input_ids[: len(short.input_ids)])


def test_prompt_truncation_keeps_the_template(tok):
    question = "What is the largest red star and the largest object ?"
    full = encode_prompt(question, tok)
    names = tok.convert_ids_to_tokens([i for i in full.tolist() if i >= 0])
    assert names[-2:] == ["ASSISTANT", ":"]
    with pytest.warns(UserWarning, match="too long"):
        short = encode_prompt(question, tok, max_length=len(full) + 15 - 4, num_image_tokens=16)
    assert len(short) == len(full) - 4
    short_names = tok.convert_ids_to_tokens([i for i in short.tolist() if i >= 0])
    assert short_names[-2:] == ["ASSISTANT", ":"] and "?" not in short_names
    with pytest.raises(PromptError):
        encode_prompt(question, tok, max_length=10)
    with pytest.raises(PromptError):
        encode_prompt("  ", tok)


def test_collate_right_pads(tok):
    a = encode_conversation([(image_question("red star"), "Sure , it is [SEG] .")], tok)
    b = encode_conversation([(image_question("What is the largest object ?"), "no .")], tok)
    ids, mask, labels = collate_conversations([a, b], tok.pad_token_id)
    assert ids.shape == mask.shape == labels.shape == (2, max(len(a.input_ids), len(b.input_ids)))
    n = len(a.input_ids)
    assert mask[0, :n].all() and not mask[0, n:].any()
    assert (ids[0, n:] == tok.pad_token_id).all() and (labels[0, n:] == IGNORE_INDEX).all()
