"""What every tab of the demo shares: its spec (:class:`TabSpec`), the app context and the
components every task lays out alike (upload box, result images, downloads, vocabulary box)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ovseg.demo.handlers import (
    DEFAULT_VIDEO_MAX_BYTES,
    DEFAULT_VIDEO_MAX_FRAMES,
    INSTANCE_HEADERS,
    Example,
    PipelineProvider,
    SessionFiles,
    describe_failure,
    is_out_of_memory,
    release_accelerator_memory,
    vocabulary_text,
)

logger = logging.getLogger(__name__)

# Every event that runs a model joins this concurrency group, so ``--concurrency`` bounds the
# model work of all tabs together (they share one device).
MODEL_CONCURRENCY_ID = "ovseg-models"
VOCABULARY_HELP = "Classes separated by commas; synonyms of one class separated by '|'."


@dataclass(frozen=True)
class TabSpec:
    """One task of the demo.

    Attributes:
        key: short id (``semantic``); also the tab's id and the prefix of its elements' ids.
        title: the tab's label.
        task: the pipeline task :class:`PipelineProvider` builds for it.
        make_handler: ``pipeline -> handler`` (a class from :mod:`ovseg.demo.handlers`).
        build: ``(context, spec) -> None``; creates the tab's components and events inside the
            open ``gr.Tab``.
        optional: leave the tab out (with a log line) when the served config has no pipeline
            for ``task``, instead of refusing to start.
    """

    key: str
    title: str
    task: str
    make_handler: Callable[[Any], Any]
    build: Callable[[DemoContext, TabSpec], None]
    optional: bool = False


@dataclass
class DemoContext:
    """What the tabs of one app share: pipelines, handlers, session folders, examples, limits
    (model concurrency; the video tab's largest clip in bytes and most frames)."""

    provider: PipelineProvider
    files: SessionFiles
    examples: list[Example] = field(default_factory=list)
    concurrency: int = 1
    video_max_bytes: int = DEFAULT_VIDEO_MAX_BYTES
    video_max_frames: int = DEFAULT_VIDEO_MAX_FRAMES
    _handlers: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def handler(self, spec: TabSpec) -> Any:
        """The tab's handler, built on first use around the task's pipeline."""
        with self._lock:
            if spec.key not in self._handlers:
                self._handlers[spec.key] = spec.make_handler(self.provider.get(spec.task))
            return self._handlers[spec.key]

    def release_memory(self) -> None:
        """Drop every cached feature and return accelerator memory (after an out-of-memory)."""
        with self._lock:
            handlers = list(self._handlers.values())
        for handler in handlers:
            if hasattr(handler, "release_memory"):
                handler.release_memory()
        release_accelerator_memory()

    @contextlib.contextmanager
    def user_errors(self) -> Iterator[None]:
        """Show any failure as a ``gr.Error`` message; after an out-of-memory, free caches first
        so the next request runs."""
        try:
            yield
        except gr.Error:
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                logger.warning("out of memory in a demo request; releasing cached features")
                self.release_memory()
            raise gr.Error(describe_failure(exc), print_exception=False) from exc


def session_id(request: gr.Request | None) -> str | None:
    """The browser session of a request (None outside a request)."""
    return getattr(request, "session_hash", None) if request is not None else None


def model_event_limits(ctx: DemoContext) -> dict[str, Any]:
    """Keyword arguments of an event that runs a model: the shared concurrency group."""
    return {"concurrency_limit": ctx.concurrency, "concurrency_id": MODEL_CONCURRENCY_ID}


def upload_image(key: str, label: str = "Image") -> gr.Image:
    """The input image (``#<key>-image``): handed on as an undecoded file, so that ovseg's
    reader applies the pixel cap before decoding."""
    return gr.Image(
        type="filepath",
        image_mode=None,
        label=label,
        sources=["upload", "clipboard"],
        elem_id=f"{key}-image",
    )


def result_image(key: str, name: str, label: str) -> gr.Image:
    """An output image (``#<key>-<name>``), sent to the browser as PNG."""
    return gr.Image(
        label=label, type="numpy", format="png", interactive=False, elem_id=f"{key}-{name}"
    )


def downloads(key: str, label: str) -> gr.File:
    """The result files of a run (``#<key>-files``)."""
    return gr.File(label=label, file_count="multiple", interactive=False, elem_id=f"{key}-files")


def default_vocabulary(ctx: DemoContext, vocabulary: Any) -> str:
    """The first example's vocabulary, else ``vocabulary`` (a Vocabulary or None) as text."""
    if ctx.examples:
        return ctx.examples[0].vocabulary
    return vocabulary_text(vocabulary) if vocabulary is not None else ""


def vocabulary_box(key: str, value: str) -> gr.Textbox:
    """The one-line vocabulary input (``#<key>-vocabulary``)."""
    return gr.Textbox(
        value=value,
        label="Vocabulary",
        info=VOCABULARY_HELP,
        lines=1,
        max_lines=4,
        max_length=4000,
        elem_id=f"{key}-vocabulary",
    )


def example_scenes(
    ctx: DemoContext, key: str, image: gr.Image, text: gr.Textbox | None = None, field: str = ""
) -> None:
    """The example scenes under a tab's inputs (nothing when there are none).

    ``text`` is filled with each example's ``field`` (``vocabulary`` or ``phrase``) when given.
    """
    if not ctx.examples:
        return
    inputs = [image] if text is None else [image, text]
    gr.Examples(
        examples=[
            [str(e.image)] if text is None else [str(e.image), getattr(e, field)]
            for e in ctx.examples
        ],
        inputs=inputs,
        label="Example scenes",
        cache_examples=False,
        elem_id=f"{key}-examples",
    )


def instance_outputs(key: str, label: str) -> tuple[gr.Dataframe, gr.File]:
    """The instance table (label, score, box, area) and the downloads of an instance tab."""
    table = result_table(key, INSTANCE_HEADERS, ["str", "number", "str", "number"], label)
    return table, downloads(key, "Downloads (results JSON, instance-id PNG, overlay PNG)")


def prompt_inputs(
    ctx: DemoContext,
    key: str,
    *,
    name: str,
    label: str,
    info: str,
    lines: int,
    max_lines: int,
    max_length: int,
    button: str,
    value: str = "",
    example_field: str = "",
) -> tuple[gr.Image, gr.Textbox, gr.Button]:
    """The input column of a prompted tab: the image, the prompt box (``#<key>-<name>``), the
    run button (``#<key>-run``) and the example scenes, which also fill the prompt with their
    ``example_field`` when one is named."""
    image = upload_image(key)
    prompt = gr.Textbox(
        value=value,
        label=label,
        info=info,
        lines=lines,
        max_lines=max_lines,
        max_length=max_length,
        elem_id=f"{key}-{name}",
    )
    run = gr.Button(button, variant="primary", elem_id=f"{key}-run")
    if example_field:
        example_scenes(ctx, key, image, prompt, example_field)
    else:
        example_scenes(ctx, key, image)
    return image, prompt, run


def result_table(key: str, headers: list[str], datatype: list[str], label: str) -> gr.Dataframe:
    """A read-only result table (``#<key>-table``)."""
    return gr.Dataframe(
        headers=headers,
        datatype=datatype,
        interactive=False,
        label=label,
        elem_id=f"{key}-table",
    )


def run_prompted(
    ctx: DemoContext, spec: TabSpec, image_path: str | None, text: str, request: gr.Request
) -> Any:
    """The handler's output for one prompt about one upload, written into the request's session
    folder; failures become messages (:meth:`DemoContext.user_errors`)."""
    with ctx.user_errors():
        handler = ctx.handler(spec)
        return handler.run(image_path, text, out_dir=ctx.files.directory(session_id(request)))
