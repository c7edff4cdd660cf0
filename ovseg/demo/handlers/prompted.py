"""What the prompted tabs (referring: a phrase, reasoning: a question) share: the prompt check
and one encoded image per upload, reused for every further prompt about it."""

from __future__ import annotations

from typing import Any

import numpy as np

from ovseg.demo.handlers.common import (
    EncodedImages,
    image_digest,
    read_upload,
    require_methods,
)
from ovseg.errors import PromptError


def check_prompt(text: Any, name: str, empty_hint: str, max_chars: int) -> str:
    """The stripped ``text``; empty or longer than ``max_chars`` raises :class:`PromptError`.

    ``name`` is what the tab calls it (``phrase``, ``question``); ``empty_hint`` follows "The
    <name> is empty;" and says what to type.
    """
    if not isinstance(text, str) or not text.strip():
        raise PromptError(f"The {name} is empty; {empty_hint}")
    text = text.strip()
    if len(text) > max_chars:
        raise PromptError(
            f"The {name} has {len(text)} characters; shorten it to {max_chars} or fewer."
        )
    return text


class PromptedHandler:
    """A tab handler around a pipeline with ``encode(image)`` and ``predict(encoded, prompt)``.

    The encoded images are kept per pipeline (:class:`EncodedImages`), so another prompt about
    the same image skips the image encoders.

    Args:
        pipeline: the task's pipeline.
        methods: the methods the tab calls on it (checked here, naming ``task``).
        task: the tab's task, for the error message.
    """

    def __init__(self, pipeline: Any, methods: tuple[str, ...], task: str) -> None:
        require_methods(pipeline, methods, task)
        self.pipeline = pipeline
        self.images = EncodedImages.shared(pipeline)

    def read(self, image: Any) -> np.ndarray:
        return read_upload(image)

    def predict(self, image: Any, prompt: str) -> tuple[np.ndarray, str, Any, bool]:
        """``(image as (H, W, 3) uint8 RGB, its digest, result, reused)`` for a checked prompt;
        the result's ``meta`` gains the ``image_digest``, ``reused`` says the encoded image
        came from the cache."""
        array = self.read(image)
        digest = image_digest(array)
        encoded, reused = self.images.get(array, digest)
        result = self.pipeline.predict(encoded, prompt)
        result.meta = {**result.meta, "image_digest": digest}
        return array, digest, result, reused

    def release_memory(self) -> None:
        self.images.release()
