"""Registers every built-in component at once.

Each registry imports the modules of its own built-ins on its first lookup (see
:mod:`ovseg.registry`), so nothing needs this module to find a component by name. Importing it
(or calling :func:`load_all`) imports them all, e.g. to list them or to fail early.
"""

from __future__ import annotations

from ovseg.registry import _ALL_REGISTRIES


def load_all() -> None:
    """Import the built-in modules of every registry."""
    for registry in list(_ALL_REGISTRIES.values()):
        registry.load_builtins()


load_all()
