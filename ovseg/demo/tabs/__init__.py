"""The demo's tabs, in display order.

A task plugs in with three pieces: a handler class in :mod:`ovseg.demo.handlers` (plain Python,
tested without a browser), a module here with a ``build(ctx, spec)`` function and a
:class:`TabSpec` named ``TAB``, and one entry in :data:`TABS`.

Every tab but the semantic one is optional: it is shown only when the served config has a
pipeline for its task (``pipelines.referring``, ``pipelines.instance`` for the instance and
click tabs, a ``database:`` section for the vocabulary-free tab, ``pipelines.reasoning`` for the
reasoning tab, ``pipelines.referring`` and/or ``pipelines.instance`` for the video tab). An
optional tab whose weights are missing is shown with a message saying how to get them, in
place of its inputs.
"""

from __future__ import annotations

from ovseg.demo.tabs import clicks, instance, reasoning, referring, semantic, video, vocab_free
from ovseg.demo.tabs.base import DemoContext, TabSpec

TABS: list[TabSpec] = [
    semantic.TAB,
    referring.TAB,
    instance.TAB,
    clicks.TAB,
    vocab_free.TAB,
    reasoning.TAB,
    video.TAB,
]

__all__ = ["TABS", "DemoContext", "TabSpec"]
