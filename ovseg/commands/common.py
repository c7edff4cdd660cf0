"""Argument handling shared by the ``ovseg`` commands (light: no model imports)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def split_overrides(values: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` overrides from positional arguments.

    A value naming an existing path stays positional even when it holds ``=``.
    """
    overrides = [v for v in values if "=" in v and not Path(v).exists()]
    rest = [v for v in values if v not in overrides]
    return rest, overrides
