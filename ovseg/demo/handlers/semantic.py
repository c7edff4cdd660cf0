"""Semantic and vocabulary-free tabs: segment, draw, tabulate, write files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.demo.handlers.common import (
    SEMANTIC_TASK,
    VOCAB_FREE_TASK,
    EncodedImages,
    LegendEntry,
    image_digest,
    legend_entries,
    legend_html,
    parse_vocabulary,
    read_upload,
    render_overlay,
    require_methods,
    results_table,
)
from ovseg.outputs import write_semantic_outputs
from ovseg.structures import OVSegResult


# ----------------------------------------------------------------------------- semantic task
@dataclass
class SemanticOutput:
    """Everything the semantic tab shows for one run.

    Attributes:
        overlay: ``(H, W, 3)`` uint8 RGB, the input image with class colours.
        legend: present classes (see :func:`legend_entries`); ``legend_html`` renders them.
        table: :data:`TABLE_HEADERS` rows, one per vocabulary class.
        files: the results JSON, the label PNG (class index per pixel, 255 unlabelled) and the
            overlay PNG with its legend, written atomically in the session folder.
        image: the decoded input, kept so the overlay can be re-blended at another opacity.
        result: the :class:`OVSegResult`.
        cached: True when the image features came from the cache.
    """

    overlay: np.ndarray
    legend: list[LegendEntry]
    legend_html: str
    table: list[list[Any]]
    files: list[Path]
    image: np.ndarray
    result: OVSegResult
    cached: bool


class SemanticHandler:
    """Semantic segmentation for the demo, reusing image features across vocabularies.

    Args:
        pipeline: a semantic pipeline (``encode``, ``predict(encoded, vocabulary)``).
        cache_size: images whose encodings are kept.
    """

    def __init__(self, pipeline: Any, *, cache_size: int = 8) -> None:
        require_methods(pipeline, ("encode", "predict"), SEMANTIC_TASK)
        self.pipeline = pipeline
        self.images = EncodedImages(pipeline, cache_size)
        self.cache = self.images.cache

    def read(self, image: Any) -> np.ndarray:
        """Decode an upload (path, bytes, PIL, array) under the pipeline's pixel cap."""
        return read_upload(image)

    def run(
        self, image: Any, vocabulary: Any, *, opacity: float = 0.5, out_dir: str | Path
    ) -> SemanticOutput:
        """Segment ``image`` into ``vocabulary`` (``"a|a2, b"`` text, list or Vocabulary).

        The image is encoded once per distinct content; later vocabularies reuse the features.
        """
        vocab = parse_vocabulary(vocabulary)
        array = self.read(image)
        digest = image_digest(array)
        encoded, cached = self.images.get(array, digest)
        result = self.pipeline.predict(encoded, vocab)
        result.meta = {**result.meta, "vocabulary": vocab.queries, "image_digest": digest}
        written = write_semantic_outputs(result, array, Path(out_dir), f"ovseg-{digest[:12]}")
        entries = legend_entries(result)
        return SemanticOutput(
            overlay=render_overlay(array, result.sem_seg, result.class_names, opacity),
            legend=entries,
            legend_html=legend_html(entries),
            table=results_table(result),
            files=[written["json"], written["labels"], written["overlay"]],
            image=array,
            result=result,
            cached=cached,
        )

    def release_memory(self) -> None:
        self.images.release()


# ----------------------------------------------------------------------------- vocabulary-free
@dataclass
class VocabFreeOutput:
    """Everything the vocabulary-free tab shows for one run.

    Attributes:
        overlay: ``(H, W, 3)`` uint8 RGB, the input with the found classes' colours.
        legend: present classes (see :func:`legend_entries`); ``legend_html`` renders them.
        names: :data:`FOUND_NAMES_HEADERS` rows: every found name with its search score, best
            first (the result's class order).
        table: :data:`TABLE_HEADERS` rows, one per found name.
        files: the results JSON (with the found names), the label PNG and the overlay PNG.
        image: the decoded input.
        result: the :class:`OVSegResult` (``class_names`` are the found names).
    """

    overlay: np.ndarray
    legend: list[LegendEntry]
    legend_html: str
    names: list[list[Any]]
    table: list[list[Any]]
    files: list[Path]
    image: np.ndarray
    result: OVSegResult


class VocabFreeHandler:
    """Vocabulary-free semantic segmentation: names searched in the preset's text database.

    Args:
        pipeline: a :class:`~ovseg.pipelines.vocab_free.VocabFreeSegmenter` (``set_image``,
            ``predict()``, ``discover``).
    """

    def __init__(self, pipeline: Any) -> None:
        require_methods(pipeline, ("encode", "predict", "discover"), VOCAB_FREE_TASK)
        self.pipeline = pipeline
        self.images = EncodedImages.shared(pipeline)

    def read(self, image: Any) -> np.ndarray:
        return read_upload(image)

    def run(self, image: Any, *, opacity: float = 0.5, out_dir: str | Path) -> VocabFreeOutput:
        """Find names for ``image`` in the database and segment it with them."""
        array = self.read(image)
        digest = image_digest(array)
        encoded, _ = self.images.get(array, digest)
        result = self.pipeline.predict(encoded)
        result.meta = {**result.meta, "image_digest": digest}
        found = result.meta.get("vocab_free", {}).get("names", [])
        written = write_semantic_outputs(
            result, array, Path(out_dir), f"ovseg-{digest[:12]}-vocab-free"
        )
        entries = legend_entries(result)
        return VocabFreeOutput(
            overlay=render_overlay(array, result.sem_seg, result.class_names, opacity),
            legend=entries,
            legend_html=legend_html(entries),
            names=[[item["name"], round(float(item["score"]), 4)] for item in found],
            table=results_table(result),
            files=[written["json"], written["labels"], written["overlay"]],
            image=array,
            result=result,
        )

    def release_memory(self) -> None:
        self.images.release()
