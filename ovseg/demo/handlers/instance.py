"""Instance and click-to-segment tabs: named SAM masks, re-thresholded without a model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.demo.handlers.common import (
    CLICK_LABELS,
    INSTANCE_TASK,
    MAX_CLICKS,
    EncodedImages,
    format_box,
    image_digest,
    parse_vocabulary,
    read_upload,
    require_methods,
)
from ovseg.errors import (
    PromptError,
)
from ovseg.outputs import write_instance_outputs
from ovseg.structures import Instances, PointPrompts
from ovseg.visualize import (
    draw_instances,
    draw_points,
)
from ovseg.vocab import Vocabulary


# ----------------------------------------------------------------------------- instance task
def instance_rows(instances: Instances) -> list[list[Any]]:
    """:data:`INSTANCE_HEADERS` rows, in ``instances`` order: name, score, box, mask area."""
    return [
        [item["name"], round(item["score"], 4), format_box(item["box_xyxy"]), item["area"]]
        for item in instances.to_dict()["instances"]
    ]


def filter_instances(instances: Instances, score_threshold: float) -> Instances:
    """The instances scoring at least ``score_threshold``, order kept."""
    keep = instances.scores >= float(score_threshold)
    return Instances(
        masks=instances.masks[keep],
        boxes=instances.boxes[keep],
        scores=instances.scores[keep],
        labels=instances.labels[keep],
        class_names=list(instances.class_names),
    )


@dataclass(frozen=True)
class PackedInstances:
    """:class:`Instances` with bit-packed masks (an eighth of the memory), to keep one result
    per browser session for re-thresholding.

    Attributes:
        bits: ``np.packbits`` of the ``(N, H, W)`` masks, flattened.
        shape: ``(N, H, W)``.
        boxes, scores, labels, class_names: as in :class:`Instances`.
    """

    bits: np.ndarray
    shape: tuple[int, int, int]
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    @classmethod
    def pack(cls, instances: Instances) -> PackedInstances:
        return cls(
            bits=np.packbits(instances.masks.ravel()),
            shape=tuple(int(v) for v in instances.masks.shape),
            boxes=instances.boxes.copy(),
            scores=instances.scores.copy(),
            labels=instances.labels.copy(),
            class_names=tuple(instances.class_names),
        )

    def unpack(self) -> Instances:
        count = math.prod(self.shape)
        masks = np.unpackbits(self.bits, count=count).astype(bool).reshape(self.shape)
        return Instances(masks, self.boxes, self.scores, self.labels, list(self.class_names))


@dataclass
class InstanceOutput:
    """Everything the instance tab shows for one run or one re-threshold.

    Attributes:
        overlay: ``(H, W, 3)`` uint8 RGB, the shown instances' masks, boxes and ``name score``.
        table: :data:`INSTANCE_HEADERS` rows of the shown instances, best first.
        files: the results JSON, the instance-id PNG (id ``k`` is the JSON's instance ``k - 1``,
            0 none) and the overlay PNG, of the shown instances.
        image: the decoded input.
        instances: every instance the pipeline named (at any score).
        shown: those scoring at least ``score_threshold``.
        score_threshold: the threshold applied.
        stem: the name the files start with.
        cached: True when the image's SAM embedding and proposals were reused.
    """

    overlay: np.ndarray
    table: list[list[Any]]
    files: list[Path]
    image: np.ndarray
    instances: Instances
    shown: Instances
    score_threshold: float
    stem: str
    cached: bool


class InstanceHandler:
    """Open-vocabulary instance segmentation / detection for the demo.

    The pipeline runs with a score threshold of 0 and the tab's threshold is applied to the
    kept result, so moving the slider never runs a model. Thresholding after the pipeline's
    class-wise NMS equals thresholding before it: greedy NMS decides each mask from the
    higher-scored ones only, and the ``max_instances`` cut keeps the best first.

    Args:
        pipeline: an :class:`~ovseg.pipelines.instance.InstanceSegmenter` (``set_image``,
            ``predict(vocabulary)``); SAM's embedding, proposals and the CLIP tokens are kept
            per image, so another vocabulary for the same image only names the masks again.
    """

    def __init__(self, pipeline: Any) -> None:
        require_methods(pipeline, ("encode", "predict", "segment_clicks"), INSTANCE_TASK)
        self.pipeline = pipeline
        self.images = EncodedImages.shared(pipeline)

    @property
    def default_threshold(self) -> float:
        """The configured ``postprocess.score_threshold`` (the slider's starting value)."""
        postprocess = getattr(self.pipeline, "postprocess", None) or {}
        return float(postprocess.get("score_threshold", 0.0))

    def default_vocabulary(self) -> Vocabulary | None:
        return getattr(self.pipeline, "vocabulary", None)

    def read(self, image: Any) -> np.ndarray:
        return read_upload(image)

    def run(
        self,
        image: Any,
        vocabulary: Any,
        *,
        score_threshold: float | None = None,
        out_dir: str | Path,
    ) -> InstanceOutput:
        """Name SAM's masks of ``image`` with ``vocabulary``; show those scoring at least
        ``score_threshold`` (default :attr:`default_threshold`)."""
        vocab = parse_vocabulary(vocabulary)
        array = self.read(image)
        digest = image_digest(array)
        encoded, reused = self.images.get(array, digest)
        instances = self.pipeline.predict(encoded, vocab, score_threshold=0.0)
        threshold = self.default_threshold if score_threshold is None else score_threshold
        out = self.render(
            array, instances, threshold, out_dir=out_dir, stem=f"ovseg-{digest[:12]}-instances"
        )
        out.cached = reused
        return out

    @staticmethod
    def render(
        image: np.ndarray,
        instances: Instances,
        score_threshold: float,
        *,
        out_dir: str | Path,
        stem: str,
    ) -> InstanceOutput:
        """Apply ``score_threshold`` to ``instances`` of ``image`` and draw / write the rest
        (no model runs)."""
        threshold = float(np.clip(score_threshold, 0.0, 1.0))
        shown = filter_instances(instances, threshold)
        written = write_instance_outputs(shown, image, Path(out_dir), stem)
        return InstanceOutput(
            overlay=draw_instances(image, shown),
            table=instance_rows(shown),
            files=[written["json"], written["ids"], written["overlay"]],
            image=image,
            instances=instances,
            shown=shown,
            score_threshold=threshold,
            stem=stem,
            cached=False,
        )

    def release_memory(self) -> None:
        self.images.release()


# ----------------------------------------------------------------------------- click-to-segment
def parse_clicks(clicks: Any) -> list[tuple[float, float, int]]:
    """Clicks as ``[(x, y, label), ...]`` from a JSON text ``"[[x, y, label], ...]"`` or a list.

    ``x, y`` are the clicked pixel's column and row (input-image pixels, as gradio's
    ``SelectData.index``); ``label`` is 1 (positive, foreground) or 0 (negative, background).
    """
    if clicks is None:
        return []
    if isinstance(clicks, str):
        text = clicks.strip()
        if not text:
            return []
        try:
            clicks = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptError(
                "Clicks must be a JSON list of [x, y, label] entries (label 1 positive, "
                f"0 negative), e.g. [[30, 40, 1]]; this text is not JSON ({exc.msg})."
            ) from exc
    if not isinstance(clicks, (list, tuple)):
        raise PromptError("Clicks must be a list of [x, y, label] entries, e.g. [[30, 40, 1]].")
    if len(clicks) > MAX_CLICKS:
        raise PromptError(f"{len(clicks)} clicks given; clear the points (at most {MAX_CLICKS}).")
    parsed = []
    for click in clicks:
        if (
            not isinstance(click, (list, tuple))
            or len(click) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in click)
            or not all(math.isfinite(v) for v in click)
            or click[2] not in (0, 1)
        ):
            raise PromptError(
                f"A click must be [x, y, label] with finite pixel coordinates and label 1 "
                f"(positive) or 0 (negative); got {click!r}."
            )
        parsed.append((float(click[0]), float(click[1]), int(click[2])))
    return parsed


def add_click(clicks: Any, x: float, y: float, mode: str) -> str:
    """``clicks`` (see :func:`parse_clicks`) with the pixel ``(x, y)`` appended as a ``mode``
    click (``positive`` / ``negative``), as JSON text."""
    if mode not in CLICK_LABELS:
        raise PromptError(f"Click mode must be one of {', '.join(CLICK_LABELS)}, not {mode!r}.")
    entries = [
        [_plain_number(cx), _plain_number(cy), label] for cx, cy, label in parse_clicks(clicks)
    ]
    entries.append([_plain_number(x), _plain_number(y), CLICK_LABELS[mode]])
    return json.dumps(entries)


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def click_prompts(clicks: Any, image_size: tuple[int, int]) -> PointPrompts:
    """Point prompts for clicked pixels of an ``(H, W)`` image.

    A click on pixel ``(x, y)`` (column, row) becomes the point ``(x + 0.5, y + 0.5)``: the
    pixel's centre in :class:`PointPrompts`' frame.
    """
    parsed = parse_clicks(clicks)
    if not parsed:
        raise PromptError("No point given; click on the image to add one (positive or negative).")
    height, width = image_size
    for x, y, _ in parsed:
        if not (0 <= x < width and 0 <= y < height):
            raise PromptError(
                f"The click ({x:g}, {y:g}) lies outside the {width}x{height} image; clear the "
                "points and click on this image."
            )
    coords = np.asarray([[x + 0.5, y + 0.5] for x, y, _ in parsed], dtype=np.float32)
    return PointPrompts(coords, np.asarray([label for _, _, label in parsed], dtype=np.int64))


@dataclass
class ClickOutput:
    """Everything the click tab shows for one set of clicks.

    Attributes:
        overlay: ``(H, W, 3)`` uint8 RGB: SAM's mask with its box and ``name score``, and the
            clicks (green positive, red negative).
        table: :data:`INSTANCE_HEADERS` rows (one, or none when SAM's mask is empty).
        files: the results JSON, the instance-id PNG and the overlay PNG.
        instances: the named mask (:class:`Instances` of length 0 or 1).
        points: the clicks as point prompts (pixel centres).
        cached: True when the image's SAM embedding was reused.
    """

    overlay: np.ndarray
    table: list[list[Any]]
    files: list[Path]
    instances: Instances
    points: PointPrompts
    cached: bool


class ClickHandler:
    """Click-to-segment: the clicks are one SAM prompt, CLIP names the mask with the vocabulary.

    Args:
        pipeline: an :class:`~ovseg.pipelines.instance.InstanceSegmenter`
            (``segment_clicks``); it shares the instance tab's pipeline and encoded images, so
            each click decodes from the kept SAM embedding.
    """

    def __init__(self, pipeline: Any) -> None:
        require_methods(pipeline, ("encode", "segment_clicks"), INSTANCE_TASK)
        self.pipeline = pipeline
        self.images = EncodedImages.shared(pipeline)

    def default_vocabulary(self) -> Vocabulary | None:
        return getattr(self.pipeline, "vocabulary", None)

    def read(self, image: Any) -> np.ndarray:
        return read_upload(image)

    def run(self, image: Any, clicks: Any, vocabulary: Any, *, out_dir: str | Path) -> ClickOutput:
        """Segment ``image`` from ``clicks`` (see :func:`parse_clicks`) and name the mask."""
        vocab = parse_vocabulary(vocabulary)
        array = self.read(image)
        points = click_prompts(clicks, array.shape[:2])
        digest = image_digest(array)
        encoded, reused = self.images.get(array, digest)
        instances = self.pipeline.segment_clicks(encoded, points, vocab)
        written = write_instance_outputs(
            instances, array, Path(out_dir), f"ovseg-{digest[:12]}-clicks"
        )
        return ClickOutput(
            overlay=draw_points(draw_instances(array, instances), points),
            table=instance_rows(instances),
            files=[written["json"], written["ids"], written["overlay"]],
            instances=instances,
            points=points,
            cached=reused,
        )

    def release_memory(self) -> None:
        self.images.release()
