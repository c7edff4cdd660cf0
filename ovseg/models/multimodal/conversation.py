"""LLaVA v1 conversations for READ / LISA: prompt text, tokens with the ``<image>`` placeholder,
and training labels that keep only the assistant's answers.

Template (LLaVA's ``conv_llava_v1``, the one LISA and READ train and test with)::

    {SYSTEM} USER: <im_start><image><im_end>\\n{question} ASSISTANT: {answer}</s>USER: ...

The system line is :data:`LLAVA_V1_SYSTEM`; turns are separated by ``" "`` after a user
message and ``"</s>"`` after an answer; a prompt for generation ends with ``"ASSISTANT:"``.
The first user message starts with ``<image>\\n``; with ``use_im_start_end`` (READ's and LISA's
setting) ``<image>`` is wrapped in ``<im_start>``/``<im_end>``. Answers that ask for a mask
contain ``[SEG]`` (``"Sure, it is [SEG]."``); an answer without ``[SEG]`` is plain text.

Tokens (LLaVA's ``tokenizer_image_token``): the prompt is split at ``<image>``, each piece is
tokenized on its own without special tokens, the pieces are joined with ``IMAGE_TOKEN_INDEX``
(-200) and BOS is put in front. Labels (LLaVA's ``preprocess_v1``): ``IGNORE_INDEX`` (-100)
everywhere except the tokens of each answer and its closing ``</s>``. Where LLaVA finds the
answer by counting tokens of the instruction (with a tokenizer-specific correction of 2), the
answer here is found by the character offsets of the tokens (a fast tokenizer is needed): a
token is labelled when its characters overlap an answer or its ``</s>``. For LLaMA's tokenizer
both give the same labels.

Length: ``max_length`` counts the image as ``num_image_tokens`` positions (what the language
model sees). A generation prompt that is too long loses the end of its question (with a
warning) so the template stays whole; a training conversation is cut at the end (LISA's
behaviour, with a warning), and a ``[SEG]`` cut off there has no hidden state, so the data side
must drop that sample's masks too (:func:`count_seg_tokens`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ovseg.errors import ConfigError, PromptError
from ovseg.models.multimodal.constants import (
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    DEFAULT_IMAGE_TOKEN,
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
)

__all__ = [
    "LLAVA_V1_ROLES",
    "LLAVA_V1_SYSTEM",
    "EncodedConversation",
    "build_prompt",
    "collate_conversations",
    "count_seg_tokens",
    "encode_conversation",
    "encode_prompt",
    "image_question",
    "tokenize_with_image",
]

LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
LLAVA_V1_ROLES = ("USER", "ASSISTANT")
TURN_SEP = " "  # after the system line and after each user message
ANSWER_SEP = "</s>"  # after each assistant answer


def image_question(question: str, *, use_im_start_end: bool = True) -> str:
    """``<image>\\n{question}``, with ``<image>`` wrapped in ``<im_start>``/``<im_end>``."""
    image = DEFAULT_IMAGE_TOKEN
    if use_im_start_end:
        image = DEFAULT_IM_START_TOKEN + image + DEFAULT_IM_END_TOKEN
    return f"{image}\n{question}"


def _render(
    turns: Sequence[tuple[str, str | None]], system: str
) -> tuple[str, list[tuple[int, int]]]:
    """The prompt text and the character spans ``[start, end)`` of each answer plus its ``</s>``."""
    if not turns:
        raise PromptError("A conversation needs at least one user message.")
    user, assistant = LLAVA_V1_ROLES
    text = system + TURN_SEP
    spans: list[tuple[int, int]] = []
    for index, (message, answer) in enumerate(turns):
        text += f"{user}: {message}{TURN_SEP}{assistant}:"
        if answer is None:
            if index != len(turns) - 1:
                raise PromptError("Only the last turn may leave the answer open.")
            break
        text += " "
        start = len(text)
        text += answer + ANSWER_SEP
        spans.append((start, len(text)))
    return text, spans


def build_prompt(turns: Sequence[tuple[str, str | None]], *, system: str = LLAVA_V1_SYSTEM) -> str:
    """LLaVA v1 text of ``turns`` = ``[(user message, answer or None), ...]``.

    The first user message should already hold the image (:func:`image_question`). A last
    answer of ``None`` leaves the prompt open at ``"ASSISTANT:"`` for generation.
    """
    return _render(turns, system)[0]


def _bos(tokenizer: Any) -> list[int]:
    """``[BOS]`` when the tokenizer itself starts encodings with it (LLaVA's test), else ``[]``."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    probe = tokenizer("a")["input_ids"]
    return [int(bos)] if probe and probe[0] == bos else []


def _tokenize_pieces(text: str, tokenizer: Any) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids with ``IMAGE_TOKEN_INDEX`` at each ``<image>``, and each token's character span
    in ``text`` (``(-1, -1)`` for BOS and the image placeholder)."""
    ids = _bos(tokenizer)
    spans: list[tuple[int, int]] = [(-1, -1)] * len(ids)
    base = 0
    for index, piece in enumerate(text.split(DEFAULT_IMAGE_TOKEN)):
        if index:
            ids.append(IMAGE_TOKEN_INDEX)
            spans.append((-1, -1))
            base += len(DEFAULT_IMAGE_TOKEN)
        if piece:
            try:
                out = tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True)
            except NotImplementedError as err:
                raise ConfigError(
                    "READ's conversations need a fast tokenizer (tokenizer.json) for the answer "
                    "offsets; load the tokenizer with use_fast=True."
                ) from err
            ids.extend(int(t) for t in out["input_ids"])
            spans.extend((base + int(s), base + int(e)) for s, e in out["offset_mapping"])
        base += len(piece)
    return ids, spans


def tokenize_with_image(prompt: str, tokenizer: Any) -> list[int]:
    """LLaVA's ``tokenizer_image_token``: BOS + pieces between ``<image>`` joined by -200."""
    return _tokenize_pieces(prompt, tokenizer)[0]


def _model_length(ids: Sequence[int], num_image_tokens: int) -> int:
    images = sum(1 for t in ids if t == IMAGE_TOKEN_INDEX)
    return len(ids) + images * (max(int(num_image_tokens), 1) - 1)


@dataclass
class EncodedConversation:
    """One tokenized conversation.

    Attributes:
        input_ids: ``(L,)`` int64, ``IMAGE_TOKEN_INDEX`` where the image goes.
        labels: ``(L,)`` int64, ``IGNORE_INDEX`` except the answers' tokens.
        prompt: the text that was tokenized.
        truncated: whether ``max_length`` cut it.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    prompt: str
    truncated: bool = False


def encode_conversation(
    turns: Sequence[tuple[str, str]],
    tokenizer: Any,
    *,
    max_length: int | None = None,
    num_image_tokens: int = 0,
    system: str = LLAVA_V1_SYSTEM,
) -> EncodedConversation:
    """Tokens and labels of a training conversation (every answer given).

    Args:
        turns: ``[(user message, answer), ...]``; the first message holds the image
            (:func:`image_question`).
        tokenizer: a fast HF tokenizer with ``[SEG]`` (and ``<im_start>``/``<im_end>``) added.
        max_length: longest sequence the language model may see (None: no limit); longer ones
            are cut at the end with a warning.
        num_image_tokens: positions the image takes in the language model (for ``max_length``).
    """
    if any(answer is None for _, answer in turns):
        raise PromptError("Training conversations need every answer; use encode_prompt.")
    text, answer_spans = _render(turns, system)
    ids, spans = _tokenize_pieces(text, tokenizer)
    labels = [
        token
        if token != IMAGE_TOKEN_INDEX
        and end > start
        and any(start < a_end and end > a_start for a_start, a_end in answer_spans)
        else IGNORE_INDEX
        for token, (start, end) in zip(ids, spans)
    ]
    truncated = False
    if max_length is not None and _model_length(ids, num_image_tokens) > max_length:
        keep = len(ids)
        while keep and _model_length(ids[:keep], num_image_tokens) > max_length:
            keep -= 1
        warnings.warn(
            f"Conversation of {_model_length(ids, num_image_tokens)} positions is longer than "
            f"max_length={max_length}; it is cut to {keep} tokens.",
            stacklevel=2,
        )
        ids, labels, truncated = ids[:keep], labels[:keep], True
    return EncodedConversation(
        torch.tensor(ids, dtype=torch.int64),
        torch.tensor(labels, dtype=torch.int64),
        text,
        truncated,
    )


def encode_prompt(
    question: str,
    tokenizer: Any,
    *,
    use_im_start_end: bool = True,
    max_length: int | None = None,
    num_image_tokens: int = 0,
    system: str = LLAVA_V1_SYSTEM,
) -> torch.Tensor:
    """``(L,)`` int64 ids of the generation prompt for one image and one question.

    ``<image>\\n{question}`` as the user message, open at ``"ASSISTANT:"``. When the prompt is
    longer than ``max_length`` (image counted as ``num_image_tokens``), the end of the question
    is dropped, with a warning.
    """
    if not isinstance(question, str) or not question.strip():
        raise PromptError("Give a question, e.g. 'What is the largest object? Please segment it.'")

    def render(q: str) -> list[int]:
        message = image_question(q, use_im_start_end=use_im_start_end)
        return tokenize_with_image(build_prompt([(message, None)], system=system), tokenizer)

    ids = render(question)
    if max_length is None or _model_length(ids, num_image_tokens) <= max_length:
        return torch.tensor(ids, dtype=torch.int64)
    excess = _model_length(ids, num_image_tokens) - max_length
    words = tokenizer(question, add_special_tokens=False)["input_ids"]
    keep = len(words) - excess
    while keep > 0:
        shorter = tokenizer.decode(words[:keep], skip_special_tokens=False)
        ids = render(shorter)
        if _model_length(ids, num_image_tokens) <= max_length:
            warnings.warn(
                f"The question is too long for max_length={max_length}; it was cut to "
                f"{keep} of {len(words)} tokens.",
                stacklevel=2,
            )
            return torch.tensor(ids, dtype=torch.int64)
        keep -= 1
    raise PromptError(
        f"The prompt template and image alone exceed max_length={max_length}; raise max_length."
    )


def count_seg_tokens(input_ids: torch.Tensor, seg_token_idx: int) -> int:
    """How many ``[SEG]`` tokens ``input_ids`` holds (= masks the sample needs)."""
    return int((torch.as_tensor(input_ids) == int(seg_token_idx)).sum())


def collate_conversations(
    items: Sequence[EncodedConversation], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to a batch: ``input_ids (R, L)`` (``pad_token_id``), ``attention_masks (R, L)``
    bool and ``labels (R, L)`` (``IGNORE_INDEX``)."""
    if not items:
        raise ConfigError("No conversation to collate.")
    length = max(len(item.input_ids) for item in items)
    input_ids = torch.full((len(items), length), int(pad_token_id), dtype=torch.int64)
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.int64)
    attention = torch.zeros((len(items), length), dtype=torch.bool)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        input_ids[row, :n] = item.input_ids
        labels[row, :n] = item.labels
        attention[row, :n] = True
    return input_ids, attention, labels
