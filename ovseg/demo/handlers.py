"""What the demo's tabs compute, as plain functions and small caches (no gradio here).

Images are HWC uint8 RGB numpy arrays (or anything :func:`ovseg.io.read_image` takes); label maps
are ``(H, W)`` class indices in vocabulary order, in input-image pixels.

- :class:`PipelineProvider` builds one pipeline per task lazily from the served preset/config.
- :class:`FeatureCache` is a thread-safe LRU; :class:`EncodedImages` keeps a pipeline's encoded
  images (``pipeline.encode(image)`` values) keyed by :func:`image_digest`, so a new vocabulary,
  phrase or click on the same image skips the image encoders. Handlers of tabs that share a
  pipeline share its cache. Requests only call public pipeline methods (``encode``,
  ``predict(encoded, query, **overrides)``, ``segment_clicks``).
- :class:`SemanticHandler` runs semantic segmentation and renders the overlay, legend, table and
  downloadable files; :class:`SessionFiles` gives each browser session its own temporary folder.
- :class:`ReferringHandler` (phrase -> SAM mask, points, similarity), :class:`InstanceHandler`
  (vocabulary -> named instances, re-thresholded without the model), :class:`ClickHandler`
  (clicks -> one SAM mask named with the vocabulary) and :class:`VocabFreeHandler` (names found
  in a text database -> semantic segmentation) wrap their pipelines through an
  :class:`EncodedImages`, so another prompt on the same image skips the image encoders.
- :func:`describe_failure` turns an exception into the message a user sees.
"""

from __future__ import annotations

import gc
import hashlib
import html
import json
import logging
import math
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
    PromptError,
    VocabularyError,
)
from ovseg.io import DEFAULT_MAX_PIXELS, read_image
from ovseg.outputs import write_instance_outputs, write_referring_outputs, write_semantic_outputs
from ovseg.structures import Instances, OVSegResult, PointPrompts, ReferringResult
from ovseg.visualize import (
    blend_heat_map,
    draw_instances,
    draw_mask,
    draw_points,
    overlay,
    palette,
)
from ovseg.vocab import Vocabulary
from ovseg.vocab.vocabulary import read_class_file

logger = logging.getLogger(__name__)

EXAMPLE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
TABLE_HEADERS = ["class", "pixels", "area %", "mean score"]
REFERRING_HEADERS = ["phrase", "score", "area", "box (x1, y1, x2, y2)"]
INSTANCE_HEADERS = ["label", "score", "box (x1, y1, x2, y2)", "area"]
FOUND_NAMES_HEADERS = ["name", "score"]
SEMANTIC_TASK = "semantic"
REFERRING_TASK = "referring"
INSTANCE_TASK = "instance"
VOCAB_FREE_TASK = "vocab_free"
CLICK_LABELS = {"positive": 1, "negative": 0}
MAX_CLICKS = 64
MAX_PHRASE_CHARS = 300


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
            ``instance``) and :func:`~ovseg.pipelines.vocab_free.build_vocab_free_pipeline` for
            ``vocab_free``; a config without that task raises :class:`ConfigError`.
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
