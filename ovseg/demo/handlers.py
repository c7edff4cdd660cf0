"""What the demo's tabs compute, as plain functions and small caches (no gradio here).

Images are HWC uint8 RGB numpy arrays (or anything :func:`ovseg.io.read_image` takes); label maps
are ``(H, W)`` class indices in vocabulary order, in input-image pixels.

- :class:`PipelineProvider` builds one pipeline per task lazily from the served preset/config.
- :class:`FeatureCache` keeps dense image features keyed by :func:`image_digest`, so typing a new
  vocabulary for the same image skips the image encoder.
- :class:`ImageSlot` shares a ``set_image`` / ``predict`` pipeline between requests, calling
  ``set_image`` only when the image changes (for tasks whose features cannot be handed around).
- :class:`SemanticHandler` runs semantic segmentation and renders the overlay, legend, table and
  downloadable files; :class:`SessionFiles` gives each browser session its own temporary folder.
- :func:`describe_failure` turns an exception into the message a user sees.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import html
import logging
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.errors import ImageReadError, ImageTooLargeError, OVSegError, VocabularyError
from ovseg.io import DEFAULT_MAX_PIXELS, read_image
from ovseg.outputs import write_semantic_outputs
from ovseg.structures import OVSegResult
from ovseg.visualize import overlay, palette
from ovseg.vocab import Vocabulary
from ovseg.vocab.vocabulary import read_class_file

logger = logging.getLogger(__name__)

EXAMPLE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
TABLE_HEADERS = ["class", "pixels", "area %", "mean score"]
SEMANTIC_TASK = "semantic"


# ----------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Example:
    """An example scene: an image file and the vocabulary typed for it."""

    image: Path
    vocabulary: str


def vocabulary_text(vocabulary: Vocabulary) -> str:
    """A vocabulary as the one-line text the textbox takes (``"a|a2, b, c"``).

    Display names that are not queries (``name: a, b`` in class files) cannot be written in one
    line; the queries are kept.
    """
    return ", ".join("|".join(names) for names in vocabulary.classes)


def class_file_text(path: str | Path) -> str:
    """A class file (one class per line, synonyms after commas) as one-line vocabulary text."""
    return vocabulary_text(Vocabulary(tuple(names for _, names in read_class_file(path))))


def default_examples_dir() -> Path | None:
    """``demo/examples`` of a source checkout, if this package runs from one."""
    folder = Path(__file__).resolve().parents[2] / "demo" / "examples"
    return folder if folder.is_dir() else None


def load_examples(folder: str | Path | None) -> list[Example]:
    """Every image in ``folder`` that has a class file of the same stem (``scene.jpg`` +
    ``scene.txt``), sorted by name; an empty list when ``folder`` is None."""
    if folder is None:
        return []
    examples = []
    for image in sorted(Path(folder).iterdir()):
        classes = image.with_suffix(".txt")
        if image.suffix.lower() in EXAMPLE_IMAGE_SUFFIXES and classes.is_file():
            examples.append(Example(image.resolve(), class_file_text(classes)))
    return examples


# ----------------------------------------------------------------------------- caches
def image_digest(image: np.ndarray) -> str:
    """Content hash of an image array (shape, dtype and pixels): the feature-cache key."""
    array = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.shape}|{array.dtype.str}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


class FeatureCache:
    """A thread-safe least-recently-used mapping ``image digest -> features``.

    Args:
        max_items: entries kept; the least recently used one is dropped beyond that.
    """

    def __init__(self, max_items: int = 8) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.max_items = int(max_items)
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``compute()`` stored under it.

        ``compute`` runs outside the lock, so other images are served meanwhile; two requests
        for the same new image may both compute it (the results are identical).
        """
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = compute()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return value

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class ImageSlot:
    """Shares one ``set_image(image)`` / ``predict(...)`` pipeline between requests.

    ``set_image`` runs only when the image's digest differs from the last one, so a new prompt
    on the same image reuses the pipeline's own feature cache. Requests take turns (a lock):
    the pipeline holds one image at a time.

    Example::

        with slot.holding(image, image_digest(image)) as pipeline:
            result = pipeline.predict(phrase)
    """

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self._lock = threading.Lock()
        self._digest: str | None = None

    @contextlib.contextmanager
    def holding(self, image: np.ndarray, digest: str) -> Iterator[Any]:
        with self._lock:
            if digest != self._digest:
                self._digest = None  # a failed set_image must not leave a stale key behind
                self.pipeline.set_image(image)
                self._digest = digest
            yield self.pipeline

    def forget(self) -> None:
        """Drop the remembered image (the next request encodes again)."""
        with self._lock:
            self._digest = None


class PipelineProvider:
    """One pipeline per task, built on first use from the served preset or config.

    Args:
        preset_or_config: preset name, YAML path or mapping (see :func:`ovseg.create_pipeline`).
        overrides: ``key=value`` config overrides.
        device: where the models run (``cpu``, ``cuda`` ...; None: the config's choice).
        factory: ``(preset_or_config, task, overrides, device) -> pipeline``; the default calls
            :func:`ovseg.create_pipeline` with ``task=``.
    """

    def __init__(
        self,
        preset_or_config: Any,
        *,
        overrides: Iterable[str] = (),
        device: str | None = None,
        factory: Callable[..., Any] | None = None,
    ) -> None:
        self.preset_or_config = preset_or_config
        self.overrides = list(overrides)
        self.device = device
        self._factory = factory or _create_task_pipeline
        self._pipelines: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, task: str) -> Any:
        with self._lock:
            if task not in self._pipelines:
                self._pipelines[task] = self._factory(
                    self.preset_or_config, task, self.overrides, self.device
                )
            return self._pipelines[task]

    @property
    def loaded_tasks(self) -> list[str]:
        with self._lock:
            return list(self._pipelines)


def _create_task_pipeline(
    preset_or_config: Any, task: str, overrides: list[str], device: str | None
) -> Any:
    from ovseg.api import create_pipeline

    return create_pipeline(preset_or_config, task=task, overrides=overrides, device=device)


class SessionFiles:
    """A private temporary folder per browser session for the files a user downloads.

    Session ids come from the client, so they are reduced to a safe folder name (letters,
    digits, ``-`` and ``_``; anything else is hashed) and can never point outside ``root``.
    """

    _SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="ovseg-demo-"))
        self.root.mkdir(parents=True, exist_ok=True)

    def folder_name(self, session_id: str | None) -> str:
        session_id = session_id or "anonymous"
        if self._SAFE.match(session_id):
            return session_id
        return "s-" + hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()[:32]

    def directory(self, session_id: str | None) -> Path:
        folder = self.root / self.folder_name(session_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def remove(self, session_id: str | None) -> None:
        shutil.rmtree(self.root / self.folder_name(session_id), ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------- rendering
@dataclass(frozen=True)
class LegendEntry:
    """One class present in a label map: its colour (``#rrggbb``), area share, mean score."""

    index: int
    name: str
    colour: str
    area_fraction: float
    mean_score: float | None


def legend_entries(result: OVSegResult) -> list[LegendEntry]:
    """The classes that own pixels, largest area first, coloured as :func:`overlay` paints them."""
    colours = palette(len(result.class_names))
    summary = result.to_dict()["classes"]
    present = sorted((c for c in summary if c["area"] > 0), key=lambda c: (-c["area"], c["index"]))
    return [
        LegendEntry(
            index=c["index"],
            name=c["name"],
            colour="#{:02x}{:02x}{:02x}".format(*(int(v) for v in colours[c["index"]])),
            area_fraction=c["area_fraction"],
            mean_score=c["mean_score"],
        )
        for c in present
    ]


def legend_html(entries: list[LegendEntry]) -> str:
    """An HTML legend (class names escaped: they are user input)."""
    if not entries:
        return '<div class="ovseg-legend"><p>No pixel was given a class.</p></div>'
    items = "".join(
        f'<li class="ovseg-legend-item" data-class-index="{e.index}">'
        f'<span class="ovseg-swatch" style="display:inline-block;width:0.9em;height:0.9em;'
        f'margin-right:0.4em;vertical-align:middle;background:{e.colour}"></span>'
        f"{html.escape(e.name)} <small>{100 * e.area_fraction:.1f}%</small></li>"
        for e in entries
    )
    return (
        '<div class="ovseg-legend"><ul style="list-style:none;padding:0;margin:0">'
        f"{items}</ul></div>"
    )


def results_table(result: OVSegResult) -> list[list[Any]]:
    """One row per vocabulary class: name, pixels, area %, mean score (None if absent)."""
    return [
        [
            c["name"],
            c["area"],
            round(100 * c["area_fraction"], 2),
            None if c["mean_score"] is None else round(c["mean_score"], 4),
        ]
        for c in result.to_dict()["classes"]
    ]


def render_overlay(
    image: np.ndarray, labels: np.ndarray, class_names: list[str], opacity: float
) -> np.ndarray:
    """Class colours blended over ``image`` at ``opacity`` in [0, 1]; ``(H, W, 3)`` uint8 RGB,
    the input's size (the legend is separate)."""
    opacity = float(np.clip(opacity, 0.0, 1.0))
    return overlay(image, labels, class_names, opacity=opacity, legend=False)


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
        pipeline: a :class:`~ovseg.pipelines.semantic.SemanticSegmenter` (``encode_images``,
            ``query_scores``, ``labels_from_scores``).
        cache_size: images whose dense features are kept.
    """

    def __init__(self, pipeline: Any, *, cache_size: int = 8) -> None:
        self.pipeline = pipeline
        self.cache = FeatureCache(cache_size)

    def read(self, image: Any) -> np.ndarray:
        """Decode an upload (path, bytes, PIL, array) under the pipeline's pixel cap."""
        if image is None:
            raise ImageReadError("No image given; upload an image or pick an example.")
        max_pixels = getattr(self.pipeline, "inference", {}).get("max_pixels", DEFAULT_MAX_PIXELS)
        return read_image(image, max_pixels=max_pixels)

    def run(
        self, image: Any, vocabulary: Any, *, opacity: float = 0.5, out_dir: str | Path
    ) -> SemanticOutput:
        """Segment ``image`` into ``vocabulary`` (``"a|a2, b"`` text, list or Vocabulary).

        The image is encoded once per distinct content; later vocabularies reuse the features.
        """
        if isinstance(vocabulary, str) and not vocabulary.strip():
            raise VocabularyError(
                "The vocabulary is empty; type classes separated by commas (synonyms with '|')."
            )
        vocab = Vocabulary.create(vocabulary)
        array = self.read(image)
        digest = image_digest(array)
        cached = digest in self.cache
        features = self.cache.get_or_compute(
            digest, lambda: self.pipeline.encode_images([array])[0]
        )
        result = self.pipeline.labels_from_scores(
            self.pipeline.query_scores(features, vocab), vocab
        )
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
        self.cache.clear()
        backbone = getattr(self.pipeline, "backbone", None)
        if hasattr(backbone, "clear_text_cache"):
            backbone.clear_text_cache()


# ----------------------------------------------------------------------------- failures
def is_out_of_memory(exc: BaseException) -> bool:
    """True for MemoryError, torch's OutOfMemoryError and the CPU allocator's failure."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def release_accelerator_memory() -> None:
    """Collect garbage and return cached GPU memory to the driver (no-op on CPU)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe_failure(exc: BaseException) -> str:
    """The message shown to the user for ``exc``.

    ovseg's own errors say what to do and are shown as they are; out-of-memory gets advice;
    anything else is logged with its traceback and shown without internals.
    """
    if is_out_of_memory(exc):
        return (
            "Out of memory while processing this request. Try a smaller image or fewer classes; "
            "cached features were released, so the next request can run."
        )
    if isinstance(exc, ImageTooLargeError):
        return f"{exc} Downscale the image before uploading it."
    if isinstance(exc, OVSegError):
        return str(exc)
    logger.error("demo request failed", exc_info=(type(exc), exc, exc.__traceback__))
    return f"The request failed ({type(exc).__name__}); the server log has the details."
