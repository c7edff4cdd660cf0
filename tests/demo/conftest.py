"""Fixtures of the demo tests: the embedded shapes-tiny pipeline, examples, a served app."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports gradio: no version check, analytics or hub telemetry.
for _name, _value in {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}.items():
    os.environ.setdefault(_name, _value)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "demo" / "examples"


@pytest.fixture(scope="module")
def shapes_tiny(one_torch_thread):
    import ovseg

    return ovseg.create_pipeline("shapes-tiny")


@pytest.fixture(scope="module")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """A function returning a TCP port free on 127.0.0.1 right now."""
    return _free_port


@contextlib.contextmanager
def _served_demo(settings, pipeline, files_root: Path) -> Iterator[tuple]:
    """Serve the demo app around ``pipeline`` in a background thread; yields (demo, ctx, url)."""
    from ovseg.demo.app import build_demo, create_context, launch_demo
    from ovseg.demo.handlers import PipelineProvider, SessionFiles

    ctx = create_context(
        "shapes-tiny",
        examples_dir=settings.examples_dir,
        concurrency=settings.concurrency,
        provider=PipelineProvider("shapes-tiny", factory=lambda *_: pipeline),
        files=SessionFiles(files_root),
    )
    demo = build_demo(ctx, queue_size=settings.queue_size)
    _, url = launch_demo(demo, settings, block=False)
    try:
        yield demo, ctx, url
    finally:
        demo.close()
        ctx.files.close()


@pytest.fixture(scope="session")
def served_demo():
    """``served_demo(settings, pipeline, files_root)``: a context manager serving the app around
    ``pipeline`` in a background thread; it yields ``(demo, context, url)``."""
    return _served_demo
