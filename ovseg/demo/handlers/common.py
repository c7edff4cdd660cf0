"""What every demo tab shares: examples, encoded-image caches, pipelines per task, session
folders, legends and tables, upload checks and failure messages."""

from __future__ import annotations

import gc
import hashlib
import html
import logging
import re
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.errors import (
    ConfigError,
    ImageReadError,
    ImageTooLargeError,
    OVSegError,
    VocabularyError,
)
from ovseg.io import DEFAULT_MAX_PIXELS, read_image
from ovseg.structures import OVSegResult
from ovseg.visualize import (
    class_colours,
    overlay,
)
from ovseg.vocab import Vocabulary
from ovseg.vocab.vocabulary import read_class_file

logger = logging.getLogger(__name__)

EXAMPLE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
TABLE_HEADERS = ["class", "pixels", "area %", "mean score"]
REFERRING_HEADERS = ["phrase", "score", "area", "box (x1, y1, x2, y2)"]
INSTANCE_HEADERS = ["label", "score", "box (x1, y1, x2, y2)", "area"]
FOUND_NAMES_HEADERS = ["name", "score"]
REASONING_HEADERS = ["mask", "score", "area", "box (x1, y1, x2, y2)"]
SEMANTIC_TASK = "semantic"
REFERRING_TASK = "referring"
INSTANCE_TASK = "instance"
VOCAB_FREE_TASK = "vocab_free"
REASONING_TASK = "reasoning"
VIDEO_TASK = "video"
CLICK_LABELS = {"positive": 1, "negative": 0}
MAX_CLICKS = 64
MAX_PHRASE_CHARS = 300
MAX_QUESTION_CHARS = 1000


# ----------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Example:
    """An example scene: an image file and the vocabulary typed for it."""

    image: Path
    vocabulary: str

    @property
    def phrase(self) -> str:
        """The first class of the vocabulary (its first synonym): the referring tab's phrase."""
        return self.vocabulary.split(",", 1)[0].split("|", 1)[0].strip()


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
    folder = Path(__file__).resolve().parents[3] / "demo" / "examples"
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


class EncodedImages:
    """The encoded images (``pipeline.encode(array)`` values) of one pipeline, least recently
    used dropped beyond ``max_items``; one instance per pipeline (:meth:`shared`).

    Example::

        encoded, reused = EncodedImages.shared(pipeline).get(array, image_digest(array))
        result = pipeline.predict(encoded, phrase)
    """

    _shared: weakref.WeakValueDictionary[int, EncodedImages] = weakref.WeakValueDictionary()
    _shared_lock = threading.Lock()

    def __init__(self, pipeline: Any, max_items: int = 8) -> None:
        self.pipeline = pipeline
        self.cache = FeatureCache(max_items)

    @classmethod
    def shared(cls, pipeline: Any) -> EncodedImages:
        """The one cache of ``pipeline`` (made on first use, dropped with its last user).

        A cache keeps its pipeline alive, so the ``id`` key cannot be reused while it exists.
        """
        with cls._shared_lock:
            images = cls._shared.get(id(pipeline))
            if images is None or images.pipeline is not pipeline:
                images = cls(pipeline)
                cls._shared[id(pipeline)] = images
            return images

    def get(self, image: np.ndarray, digest: str) -> tuple[Any, bool]:
        """``(encoded image, reused)``; ``reused`` says it came from the cache."""
        reused = digest in self.cache
        return self.cache.get_or_compute(digest, lambda: self.pipeline.encode(image)), reused

    def __len__(self) -> int:
        return len(self.cache)

    def release(self) -> None:
        """Forget every encoded image and the text embeddings the backbone cached."""
        self.cache.clear()
        backbone = getattr(self.pipeline, "backbone", None)
        if hasattr(backbone, "clear_text_cache"):
            backbone.clear_text_cache()


class PipelineProvider:
    """One pipeline per task, built on first use from the served preset or config.

    Args:
        preset_or_config: preset name, YAML path or mapping (see :func:`ovseg.create_pipeline`).
        overrides: ``key=value`` config overrides.
        device: where the models run (``cpu``, ``cuda`` ...; None: the config's choice).
        factory: ``(preset_or_config, task, overrides, device) -> pipeline``; the default calls
            :func:`ovseg.create_pipeline` with ``task=`` (``semantic``, ``referring``,
            ``instance``, ``reasoning``),
            :func:`~ovseg.demo.handlers.video.build_video_pipelines` for ``video`` (both video
            tasks the config defines) and
            :func:`~ovseg.pipelines.vocab_free.build_vocab_free_pipeline` for ``vocab_free``;
            a config without that task raises :class:`ConfigError`.
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
    if task == VIDEO_TASK:
        from ovseg.demo.handlers.video import build_video_pipelines

        return build_video_pipelines(preset_or_config, overrides, device)
    if task == VOCAB_FREE_TASK:
        from ovseg.api import build_vocab_free_pipeline

        return build_vocab_free_pipeline(preset_or_config, device=device, overrides=overrides)
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
    """The classes that own pixels, largest area first, with the pure colour :func:`overlay`
    blends for them (:func:`~ovseg.visualize.class_colours` of the present classes)."""
    summary = result.to_dict()["classes"]
    present = sorted((c for c in summary if c["area"] > 0), key=lambda c: (-c["area"], c["index"]))
    colours = class_colours([c["name"] for c in present])
    return [
        LegendEntry(
            index=c["index"],
            name=c["name"],
            colour="#{:02x}{:02x}{:02x}".format(*(int(v) for v in colour)),
            area_fraction=c["area_fraction"],
            mean_score=c["mean_score"],
        )
        for c, colour in zip(present, colours, strict=True)
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


# ----------------------------------------------------------------------------- requests
def read_upload(image: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an upload (path, bytes, PIL, array) as ``(H, W, 3)`` uint8 RGB under a pixel cap
    (the pipeline's own cap applies again when it encodes the array)."""
    if image is None:
        raise ImageReadError("No image given; upload an image or pick an example.")
    return read_image(image, max_pixels=max_pixels)


def parse_vocabulary(vocabulary: Any) -> Vocabulary:
    """A vocabulary from ``"a|a2, b"`` text, a list or a :class:`Vocabulary`; empty text is an
    error that says what to type."""
    if isinstance(vocabulary, str) and not vocabulary.strip():
        raise VocabularyError(
            "The vocabulary is empty; type classes separated by commas (synonyms with '|')."
        )
    return Vocabulary.create(vocabulary)


def require_methods(pipeline: Any, methods: Sequence[str], task: str) -> None:
    """Refuse (:class:`ConfigError`) a pipeline that lacks what the ``task`` tab calls."""
    missing = [name for name in methods if not callable(getattr(pipeline, name, None))]
    if missing:
        raise ConfigError(
            f"The {task} tab needs a pipeline with {', '.join(methods)}; "
            f"{type(pipeline).__name__} has no {', '.join(missing)}. Check the type of the "
            f"config's pipeline for the {task} task."
        )


def format_box(box: Sequence[float] | None) -> str:
    """An XYXY box as ``"x1, y1, x2, y2"`` (input-image pixels; ``""`` for no box)."""
    if box is None:
        return ""
    return ", ".join(f"{float(v):g}" for v in box)


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
