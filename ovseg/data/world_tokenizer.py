"""A small LLaMA-style BPE tokenizer for the synthetic world's language.

The corpus (:func:`world_corpus`) is what a multimodal model trained on the synthetic world
reads and writes: scene captions of training scenes, the referring / reasoning queries asked
about them (:mod:`ovseg.data.reasoning_queries`) with every question and answer template, every
class name, and the conversation template's fixed words (LLaVA v1's system message, ``USER:``,
``ASSISTANT:``).

The tokenizer (:func:`train_world_tokenizer`) copies LLaMA's conventions: ids 0, 1, 2 are
``<unk>``, ``<s>``, ``</s>``; ids 3-258 are the byte tokens ``<0x00>`` ... ``<0xFF>`` (a character
outside the learned vocabulary falls back to its UTF-8 bytes instead of ``<unk>``); words are
split at spaces and a space is written ``▁`` at the start of the following word; every encoded
text starts with ``<s>`` (no ``</s>``). The padding token is ``<unk>``, as LLaVA and LISA set it.
``<image>`` is not in the vocabulary: prompts are split at ``<image>`` and the image features
are spliced in by position. After training, ``[SEG]`` is added as a (non-special) token, then
``<im_start>`` and ``<im_end>`` as special tokens (the image's delimiters in READ / LISA's
prompts), in LISA's order: they are the last three ids.

Training is deterministic: the same settings give byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.data.reasoning_queries import (
    ANSWERS,
    LONG_QUESTIONS,
    SEG_TOKEN,
    SHORT_QUESTIONS,
    answer_text,
    scene_queries,
)
from ovseg.data.synthetic import generate_scene, scene_rng
from ovseg.data.synthetic_vocab import CLASS_NAMES
from ovseg.errors import ConfigError

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
IM_START, IM_END = "<im_start>", "<im_end>"
SPACE = "\u2581"  # "▁", SentencePiece's word-boundary mark
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
# LLaVA v1's conversation template: the system message and the role tags
CONVERSATION_TEXTS: tuple[str, ...] = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "USER: ASSISTANT:",
    "USER:",
    "ASSISTANT:",
    "\n",
)
DEFAULT_VOCAB_SIZE = 1024
DEFAULT_NUM_SCENES = 2000
MODEL_MAX_LENGTH = 512


def world_corpus(num_scenes: int = DEFAULT_NUM_SCENES, seed: int = 0) -> list[str]:
    """The texts the tokenizer learns from (see the module docstring), in a fixed order.

    Scenes are training scenes (``split="train"``, seen classes only) of the given seed; class
    names of every class are added so that no colour or shape word is split unevenly.
    """
    texts: list[str] = list(CONVERSATION_TEXTS) + list(CLASS_NAMES)
    texts += [q.format(phrase="{}").replace("{}", "") for q in SHORT_QUESTIONS + LONG_QUESTIONS]
    texts += list(ANSWERS) + [answer_text(n) for n in (2, 3, 4)]
    for index in range(int(num_scenes)):
        scene = generate_scene(scene_rng(seed, "train", index), image_size=64, split="train")
        texts.append(scene.caption)
        for query in scene_queries(scene):
            texts.append(query.text)
            template = (SHORT_QUESTIONS if query.kind == "class" else LONG_QUESTIONS)[index % 2]
            texts.append(template.format(phrase=query.text))
    return texts


def build_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Any:
    """A ``tokenizers.Tokenizer`` trained on ``texts`` (LLaMA's layout, without ``[SEG]``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    fixed = [UNK, BOS, EOS, *BYTE_TOKENS]
    if vocab_size <= len(fixed):
        raise ConfigError(
            f"vocab_size must exceed {len(fixed)} (specials + bytes), got {vocab_size}."
        )
    pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first", split=True)
    learner = Tokenizer(models.BPE(unk_token=UNK))
    learner.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(fixed), special_tokens=[], show_progress=False
    )
    learner.train_from_iterator(list(texts), trainer=trainer)
    learned = json.loads(learner.to_str())["model"]
    pieces = sorted(learned["vocab"], key=learned["vocab"].get)
    vocab = {token: i for i, token in enumerate(fixed + [p for p in pieces if p not in fixed])}
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace(SPACE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1, right=0),
        ]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer.add_special_tokens([UNK, BOS, EOS])
    return tokenizer


def as_pretrained(tokenizer: Any) -> Any:
    """Wrap a ``tokenizers.Tokenizer`` as ``transformers.PreTrainedTokenizerFast`` with LLaMA's
    special tokens (pad = unk), right padding, ``[SEG]``, ``<im_start>`` and ``<im_end>`` added."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=UNK,
        padding_side="right",
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    fast.add_tokens([SEG_TOKEN])
    fast.add_tokens([IM_START, IM_END], special_tokens=True)
    return fast


def train_world_tokenizer(
    out_dir: str | os.PathLike,
    *,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    num_scenes: int = DEFAULT_NUM_SCENES,
    seed: int = 0,
    extra_texts: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Train on :func:`world_corpus` (plus ``extra_texts``) and save a HF tokenizer folder.

    The folder is written under a temporary name and renamed into place; an existing
    ``out_dir`` is refused unless ``overwrite``. Returns ``out_dir``.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; choose another folder or pass overwrite (--overwrite).")
    texts = world_corpus(num_scenes, seed) + list(extra_texts)
    fast = as_pretrained(build_tokenizer(texts, vocab_size))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fast.save_pretrained(str(staging))
        _normalise_config(staging)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def _normalise_config(folder: Path) -> None:
    """Sort the JSON keys of the saved config files so that equal tokenizers give equal bytes."""
    for path in sorted(folder.glob("*.json")):
        if path.name == "tokenizer.json":
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_world_tokenizer(folder: str | os.PathLike) -> Any:
    """``PreTrainedTokenizerFast`` from a folder written by :func:`train_world_tokenizer`."""
    from transformers import PreTrainedTokenizerFast

    path = Path(folder)
    if not (path / "tokenizer.json").is_file():
        raise ConfigError(
            f"{path} holds no tokenizer.json; write one with python tools/train_tokenizer.py."
        )
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def token_lengths(tokenizer: Any, texts: Iterable[str]) -> np.ndarray:
    """Tokens per text (with ``<s>``), e.g. to size ``model_max_length``."""
    return np.array([len(tokenizer(t).input_ids) for t in texts], dtype=np.int64)
