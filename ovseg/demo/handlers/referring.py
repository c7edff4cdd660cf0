"""Referring tab: a phrase -> SAM mask, points, similarity heat map."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.demo.handlers.common import (
    MAX_PHRASE_CHARS,
    REFERRING_TASK,
    EncodedImages,
    format_box,
    image_digest,
    read_upload,
    require_methods,
)
from ovseg.errors import (
    PromptError,
)
from ovseg.outputs import write_referring_outputs
from ovseg.structures import ReferringResult
from ovseg.visualize import (
    blend_heat_map,
    draw_mask,
    draw_points,
)


# ----------------------------------------------------------------------------- referring task
def check_phrase(phrase: Any) -> str:
    """The stripped phrase; empty or overlong phrases raise :class:`PromptError`."""
    if not isinstance(phrase, str) or not phrase.strip():
        raise PromptError("The phrase is empty; type what to find, e.g. 'the red star'.")
    phrase = phrase.strip()
    if len(phrase) > MAX_PHRASE_CHARS:
        raise PromptError(
            f"The phrase has {len(phrase)} characters; shorten it to {MAX_PHRASE_CHARS} or fewer."
        )
    return phrase


def referring_row(result: ReferringResult) -> list[Any]:
    """The :data:`REFERRING_HEADERS` row of a result: phrase, predicted IoU, area (pixels), box."""
    summary = result.to_dict()
    return [
        summary["phrase"],
        round(summary["score"], 4),
        summary["area"],
        format_box(summary["box_xyxy"]),
    ]


@dataclass
class ReferringOutput:
    """Everything the referring tab shows for one run.

    Attributes:
        mask_overlay: ``(H, W, 3)`` uint8 RGB, the input with SAM's mask and the point prompts
            (green positive, red negative, grey neutral).
        heat_map: ``(H, W, 3)`` uint8 RGB, the input with the phrase's similarity map (jet
            colours, red high) and the same points.
        table: one :data:`REFERRING_HEADERS` row.
        files: the results JSON, the mask PNG (255 inside), the similarity PNG (grey levels)
            and the two-panel overlay PNG, written atomically in the session folder.
        result: the :class:`ReferringResult`.
        cached: True when the image embedding was reused (same image as the last request).
    """

    mask_overlay: np.ndarray
    heat_map: np.ndarray
    table: list[list[Any]]
    files: list[Path]
    result: ReferringResult
    cached: bool


class ReferringHandler:
    """Referring segmentation for the demo: phrase -> SAM mask from similarity points.

    Args:
        pipeline: a :class:`~ovseg.pipelines.referring.ReferringSegmenter` (``encode``,
            ``predict(encoded, phrase)``); the encoded images (SAM embedding, CLIP tokens) are
            kept, so a new phrase for the same image encodes only the text.
    """

    def __init__(self, pipeline: Any) -> None:
        require_methods(pipeline, ("encode", "predict", "segment_similarity"), REFERRING_TASK)
        self.pipeline = pipeline
        self.images = EncodedImages.shared(pipeline)

    def read(self, image: Any) -> np.ndarray:
        return read_upload(image)

    def run(
        self, image: Any, phrase: Any, *, opacity: float = 0.5, out_dir: str | Path
    ) -> ReferringOutput:
        """Find what ``phrase`` refers to in ``image``; ``opacity`` in [0, 1] tints the mask."""
        phrase = check_phrase(phrase)
        array = self.read(image)
        digest = image_digest(array)
        encoded, reused = self.images.get(array, digest)
        result = self.pipeline.predict(encoded, phrase)
        result.meta = {**result.meta, "image_digest": digest}
        written = write_referring_outputs(
            result, array, Path(out_dir), f"ovseg-{digest[:12]}-referring"
        )
        opacity = float(np.clip(opacity, 0.0, 1.0))
        return ReferringOutput(
            mask_overlay=draw_points(draw_mask(array, result.mask, opacity=opacity), result.points),
            heat_map=draw_points(blend_heat_map(array, result.similarity), result.points),
            table=[referring_row(result)],
            files=[written["json"], written["mask"], written["similarity"], written["overlay"]],
            result=result,
            cached=reused,
        )

    def release_memory(self) -> None:
        self.images.release()
