"""Referring tab: a phrase -> SAM mask, points, similarity heat map."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.demo.handlers.common import (
    MAX_PHRASE_CHARS,
    REFERRING_TASK,
    format_box,
)
from ovseg.demo.handlers.prompted import PromptedHandler, check_prompt
from ovseg.errors import ConfigError
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
    return check_prompt(
        phrase, "phrase", "type what to find, e.g. 'the red star'.", MAX_PHRASE_CHARS
    )


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


class ReferringHandler(PromptedHandler):
    """Referring segmentation for the demo: phrase -> SAM mask (from similarity points, or from
    the best detector box with ``GroundedReferringSegmenter``).

    Args:
        pipeline: a :class:`~ovseg.pipelines.referring.ReferringSegmenter` or
            :class:`~ovseg.pipelines.grounded_referring.GroundedReferringSegmenter` (``encode``,
            ``predict(encoded, phrase)``); the encoded images (SAM embedding, CLIP tokens) are
            kept, so a new phrase for the same image encodes only the text.
    """

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline, ("encode", "predict"), REFERRING_TASK)
        if getattr(pipeline, "query_name", None) != "phrase":
            raise ConfigError(
                f"The {REFERRING_TASK} tab needs a pipeline with encode, predict(encoded, phrase); "
                f"{type(pipeline).__name__} has no phrase query (it takes a "
                f"{getattr(pipeline, 'query_name', 'different query')}). Check the type of the "
                f"config's pipeline for the {REFERRING_TASK} task."
            )

    def run(
        self, image: Any, phrase: Any, *, opacity: float = 0.5, out_dir: str | Path
    ) -> ReferringOutput:
        """Find what ``phrase`` refers to in ``image``; ``opacity`` in [0, 1] tints the mask."""
        array, digest, result, reused = self.predict(image, check_phrase(phrase))
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
