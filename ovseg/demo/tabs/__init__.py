"""The demo's tabs, in display order.

A task plugs in with three pieces: a handler class in :mod:`ovseg.demo.handlers` (plain Python,
tested without a browser), a module here with a ``build(ctx, spec)`` function and a
:class:`TabSpec` named ``TAB``, and one entry in :data:`TABS`.
"""

from __future__ import annotations

from ovseg.demo.tabs import semantic
from ovseg.demo.tabs.base import DemoContext, TabSpec

TABS: list[TabSpec] = [semantic.TAB]

__all__ = ["TABS", "DemoContext", "TabSpec"]
