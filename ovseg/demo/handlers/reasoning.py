"""Reasoning tab: a question about an image -> the generated answer and one mask per ``[SEG]``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.demo.handlers.common import (
    MAX_QUESTION_CHARS,
    REASONING_TASK,
    format_box,
)
from ovseg.demo.handlers.prompted import PromptedHandler, check_prompt
from ovseg.errors import ConfigError
from ovseg.outputs import write_reasoning_outputs
from ovseg.structures import ReasoningResult
from ovseg.visualize import reasoning_overlay

NO_MASK_NOTE = "The answer has no [SEG], so there is no mask."


def check_question(question: Any) -> str:
    """The stripped question; empty or overlong questions raise :class:`PromptError`."""
    return check_prompt(
        question,
        "question",
        "type a question about the image, e.g. "
        "'Which object is the largest? Please output segmentation mask.'",
        MAX_QUESTION_CHARS,
    )


def reasoning_rows(result: ReasoningResult) -> list[list[Any]]:
    """One :data:`REASONING_HEADERS` row per mask: index, predicted IoU, area (pixels), box."""
    return [
        [entry["index"], round(entry["score"], 4), entry["area"], format_box(entry["box_xyxy"])]
        for entry in result.to_dict()["masks"]
    ]


@dataclass
class ReasoningOutput:
    """Everything the reasoning tab shows for one run.

    Attributes:
        answer: the generated answer (``[SEG]`` kept where the model placed it).
        overlay: ``(H + header, W, 3)`` uint8 RGB, :func:`~ovseg.visualize.reasoning_overlay`:
            the answer written above the input with each mask in its own colour and its SasP
            points (green positive, red negative); None when the answer has no ``[SEG]``.
        note: a line under the answer (:data:`NO_MASK_NOTE` without masks, else empty).
        table: one :data:`REASONING_HEADERS` row per mask.
        files: the results JSON, one mask PNG per mask (255 inside) and the overlay PNG, written
            atomically in the session folder.
        result: the :class:`ReasoningResult`.
        cached: True when the encoded image was reused (same image as an earlier request).
    """

    answer: str
    overlay: np.ndarray | None
    note: str
    table: list[list[Any]]
    files: list[Path]
    result: ReasoningResult
    cached: bool


class ReasoningHandler(PromptedHandler):
    """Reasoning segmentation for the demo: question -> answer and masks (READ).

    Args:
        pipeline: a :class:`~ovseg.pipelines.reasoning.ReasoningSegmenter` (``encode``,
            ``predict(encoded, question)``); the encoded images (with SAM's embedding once
            computed) are kept, so another question about the same image skips SAM's encoder.
    """

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline, ("encode", "predict"), REASONING_TASK)
        if getattr(pipeline, "query_name", None) != "question":
            raise ConfigError(
                f"The {REASONING_TASK} tab needs a pipeline that answers questions "
                f"(ReasoningSegmenter), not {type(pipeline).__name__}."
            )

    def run(
        self, image: Any, question: Any, *, opacity: float = 0.5, out_dir: str | Path
    ) -> ReasoningOutput:
        """Answer ``question`` about ``image``; ``opacity`` in [0, 1] tints the masks."""
        array, digest, result, reused = self.predict(image, check_question(question))
        stem = f"ovseg-{digest[:12]}-reasoning"
        written = write_reasoning_outputs(result, array, Path(out_dir), stem)
        opacity = float(np.clip(opacity, 0.0, 1.0))
        has_masks = len(result) > 0
        return ReasoningOutput(
            answer=result.answer,
            overlay=reasoning_overlay(array, result, opacity=opacity) if has_masks else None,
            note="" if has_masks else NO_MASK_NOTE,
            table=reasoning_rows(result),
            files=[
                written["json"],
                *(written[f"mask_{k}"] for k in range(len(result))),
                written["overlay"],
            ],
            result=result,
            cached=reused,
        )
