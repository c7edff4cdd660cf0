"""The synthetic world's tokenizer: LLaMA's special-token layout, [SEG], byte fallback,
determinism, atomic writing, and the packaged copy."""

from __future__ import annotations

import pytest

from ovseg.data.reasoning_queries import SEG_TOKEN
from ovseg.data.world_tokenizer import (
    load_world_tokenizer,
    train_world_tokenizer,
    world_corpus,
)
from ovseg.errors import ConfigError, WeightsNotFoundError
from ovseg.model_zoo.embedded import packaged_tokenizer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return train_world_tokenizer(tmp_path_factory.mktemp("tok") / "shapes", num_scenes=20)


def _check_layout(tok):
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 258]) == [
        "<unk>",
        "<s>",
        "</s>",
        "<0x00>",
        "<0xFF>",
    ]
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)
    seg = tok(SEG_TOKEN, add_special_tokens=False).input_ids
    assert seg == [len(tok) - 3]
    assert tok("<im_start><im_end>", add_special_tokens=False).input_ids == [
        len(tok) - 2,
        len(tok) - 1,
    ]
    assert "<image>" not in tok.get_vocab()
    ids = tok("What is the shape above the red star? Sure, it is [SEG].").input_ids
    assert ids[0] == 1 and ids[-1] != 2 and seg[0] in ids  # <s> first, no </s> added
    # world words are single tokens
    assert tok.convert_ids_to_tokens(tok("the red star", add_special_tokens=False).input_ids) == [
        "\u2581the",
        "\u2581red",
        "\u2581star",
    ]


def test_layout_and_round_trip(folder):
    tok = load_world_tokenizer(folder)
    _check_layout(tok)
    text = "Can you segment the blue ring? Sure, it is [SEG]."
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
    # the image delimiters are special: dropped when decoding an answer
    assert tok.decode(tok("<im_start><im_end> red").input_ids, skip_special_tokens=True) == "red"
    # a character never seen falls back to its UTF-8 bytes, and decodes back
    ids = tok("zebra \u00e9", add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids
    assert set(tok.convert_ids_to_tokens(ids)) & {"<0xC3>", "<0xA9>"} == {"<0xC3>", "<0xA9>"}
    assert tok.decode(ids) == "zebra \u00e9"


def test_training_is_deterministic(folder, tmp_path):
    again = train_world_tokenizer(tmp_path / "again", num_scenes=20)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (folder / name).read_bytes()


def test_refuses_to_overwrite_and_leaves_no_temporary_folder(folder, tmp_path):
    with pytest.raises(ConfigError, match="exists"):
        train_world_tokenizer(folder, num_scenes=2)
    with pytest.raises(ConfigError, match="vocab_size"):
        train_world_tokenizer(tmp_path / "small", num_scenes=2, vocab_size=100)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_corpus_holds_templates_and_queries():
    corpus = world_corpus(num_scenes=5)
    assert any(t.startswith("A chat between") for t in corpus)
    assert "Sure, it is [SEG]." in corpus and "purple ring" in corpus
    assert any(t.startswith("the shape") or t.startswith("the largest") for t in corpus)


def test_packaged_tokenizer():
    _check_layout(load_world_tokenizer(packaged_tokenizer("shapes-bpe")))
    with pytest.raises(WeightsNotFoundError):
        packaged_tokenizer("nope")
