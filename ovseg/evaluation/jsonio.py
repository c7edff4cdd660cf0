"""Strict JSON for evaluation results: NaN (an undefined metric) becomes null, files are atomic."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ovseg.fileio import atomic_write_text


def json_float(value: Any) -> float | None:
    """A float for JSON; NaN (undefined metric) becomes null so the file stays strict JSON."""
    number = float(value)
    return None if math.isnan(number) else number


def nan_to_none(value: Any) -> Any:
    """``value`` with every float NaN inside mappings, lists and tuples replaced by None."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Mapping):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value


def dumps_indented(document: Any) -> str:
    """``document`` as indented strict JSON text with a final newline (NaN is refused)."""
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def write_json_atomic(path: str | Path, document: Any) -> Path:
    """Write ``document`` as indented strict JSON to ``path`` atomically (NaN is refused)."""
    return atomic_write_text(path, dumps_indented(document))
