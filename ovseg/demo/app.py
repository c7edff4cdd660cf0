"""The Gradio app behind ``ovseg demo``, built from ovseg's public API.

:func:`build_demo` lays out one tab per :class:`~ovseg.demo.tabs.TabSpec` and sets up the bounded
queue; :func:`launch_demo` serves it under the rules of :mod:`ovseg.demo.security`;
:func:`serve` does both from validated settings.

Importing this module switches off gradio's network calls unless the environment already says
otherwise (``GRADIO_ANALYTICS_ENABLED=False``: no version check, no usage analytics;
``HF_HUB_OFFLINE=1``, ``HF_HUB_DISABLE_TELEMETRY=1``: no hub telemetry), before gradio is imported.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovseg.errors import ConfigError, MissingDependencyError, WeightsNotFoundError

QUIET_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
for _name, _value in QUIET_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

try:
    import gradio as gr
except ImportError as _exc:  # pragma: no cover - depends on the installation
    raise MissingDependencyError(
        "The demo needs gradio; install it with: pip install 'ovseg[demo]'"
    ) from _exc

from ovseg.demo.handlers import (  # noqa: E402
    DEFAULT_VIDEO_MAX_BYTES,
    DEFAULT_VIDEO_MAX_FRAMES,
    PipelineProvider,
    SessionFiles,
    load_examples,
)
from ovseg.demo.security import ServeSettings, launch_kwargs  # noqa: E402
from ovseg.demo.tabs import TABS, DemoContext, TabSpec  # noqa: E402

logger = logging.getLogger(__name__)

TITLE = "ovseg: open-vocabulary segmentation"


@dataclass
class ServedDemo:
    """A running (or finished) demo: the Blocks, its local URL and the shared context."""

    demo: gr.Blocks
    url: str
    context: DemoContext

    def close(self) -> None:
        """Stop the server and delete the session folders."""
        self.demo.close()
        self.context.files.close()


def create_context(
    preset_or_config: Any,
    *,
    overrides: Sequence[str] = (),
    device: str | None = None,
    examples_dir: str | os.PathLike | None = None,
    concurrency: int = 1,
    provider: PipelineProvider | None = None,
    files: SessionFiles | None = None,
    video_max_bytes: int = DEFAULT_VIDEO_MAX_BYTES,
    video_max_frames: int = DEFAULT_VIDEO_MAX_FRAMES,
) -> DemoContext:
    """What the tabs share. ``provider`` replaces the default one (tests pass their own)."""
    return DemoContext(
        provider=provider or PipelineProvider(preset_or_config, overrides=overrides, device=device),
        files=files or SessionFiles(),
        examples=load_examples(examples_dir),
        concurrency=concurrency,
        video_max_bytes=video_max_bytes,
        video_max_frames=video_max_frames,
    )


def build_demo(
    ctx: DemoContext,
    *,
    tabs: Sequence[TabSpec] = TABS,
    queue_size: int = 16,
    description: str = "",
) -> gr.Blocks:
    """The Blocks app: a header, one tab per spec whose pipeline builds, a bounded queue.

    Every tab's pipeline is built first, so a bad preset fails here, before serving; an
    ``optional`` tab whose pipeline the config does not define (or whose optional packages are
    missing) is left out, and one whose weights are missing shows why (``#<key>-unavailable``)
    instead of its inputs.

    Extra requests beyond ``queue_size`` waiting ones are refused and the page shows gradio's
    "busy, try again" message; at most ``ctx.concurrency`` requests run models at once. The REST
    routes go through the same queue (``api_open=False``).
    """
    states = [(spec, _pipeline_state(ctx, spec)) for spec in tabs]
    with gr.Blocks(title="ovseg demo", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{description}".rstrip(), elem_id="ovseg-header")
        with gr.Tabs():
            for spec, state in states:
                if state is _LEFT_OUT:
                    continue
                with gr.Tab(spec.title, id=spec.key, elem_id=f"tab-{spec.key}"):
                    if state is _READY:
                        spec.build(ctx, spec)
                    else:
                        gr.Markdown(state, elem_id=f"{spec.key}-unavailable")

        def forget_session(request: gr.Request) -> None:
            ctx.files.remove(getattr(request, "session_hash", None))

        demo.unload(forget_session)
    demo.queue(max_size=queue_size, default_concurrency_limit=ctx.concurrency, api_open=False)
    return demo


_READY = "ready"
_LEFT_OUT = "left out"


def _pipeline_state(ctx: DemoContext, spec: TabSpec) -> str:
    """Build the tab's handler: :data:`_READY`, :data:`_LEFT_OUT`, or the message an optional
    tab shows in place of its inputs.

    An optional tab whose config section is absent (ConfigError) or whose optional packages are
    not installed (MissingDependencyError, e.g. faiss for the vocabulary-free tab under
    ``pip install 'ovseg[demo]'``) is left out with a log line; one whose weights are missing
    (WeightsNotFoundError) is shown with the error's message, which says how to get them. A
    required tab raises all three.
    """
    try:
        ctx.handler(spec)
    except MissingDependencyError as exc:
        if not spec.optional:
            raise
        logger.warning("tab %r left out: %s", spec.title, exc)
        return _LEFT_OUT
    except ConfigError as exc:
        if not spec.optional:
            raise
        logger.info("tab %r left out: %s", spec.title, exc)
        return _LEFT_OUT
    except WeightsNotFoundError as exc:
        if not spec.optional:
            raise
        logger.warning("tab %r has no weights: %s", spec.title, exc)
        return (
            f"**{spec.title} is unavailable:** its model weights are missing.\n\n"
            f"{_markdown_text(str(exc))}\n\nThe other tabs work as usual."
        )
    return _READY


def _markdown_text(text: str) -> str:
    """``text`` shown literally in Markdown (file names such as ``a_b_c`` stay unformatted)."""
    return re.sub(r"([\\`*_{}\[\]<>#|])", r"\\\1", text)


def launch_demo(demo: gr.Blocks, settings: ServeSettings, *, block: bool = True) -> tuple[Any, str]:
    """Serve ``demo`` under ``settings``; returns the FastAPI app and the local URL.

    With ``block=False`` the server runs in a background thread (close it with
    ``demo.close()``).
    """
    app, local_url, _share_url = demo.launch(
        prevent_thread_lock=not block, quiet=not block, **launch_kwargs(settings)
    )
    return app, local_url


def serve(
    settings: ServeSettings,
    preset_or_config: Any,
    *,
    overrides: Sequence[str] = (),
    device: str | None = None,
    block: bool = True,
    provider: PipelineProvider | None = None,
) -> ServedDemo:
    """Build the pipelines and the app for ``preset_or_config`` and serve it.

    Pipelines are built before the server starts, so a bad preset or missing weights fail here.
    With ``block=False`` it returns at once (``.close()`` stops the server).
    """
    ctx = create_context(
        preset_or_config,
        overrides=overrides,
        device=device,
        examples_dir=settings.examples_dir,
        concurrency=settings.concurrency,
        provider=provider,
        video_max_bytes=settings.video_max_bytes,
        video_max_frames=settings.video_max_frames,
    )
    atexit.register(ctx.files.close)
    # a preset name, or a config file's name (its folder is nobody's business)
    source = Path(preset_or_config).name if isinstance(preset_or_config, (str, os.PathLike)) else ""
    description = f"Model: `{source}`." if source else ""
    demo = build_demo(ctx, queue_size=settings.queue_size, description=description)
    _, url = launch_demo(demo, settings, block=block)
    return ServedDemo(demo, url, ctx)
