"""Plain-text tables for evaluation results, laid out like mmsegmentation's logs.

Example (``format_table``)::

    per class results:
    +-------+-------+-------+
    | Class |  IoU  |  Acc  |
    +-------+-------+-------+
    |  sky  | 33.33 | 50.00 |
    | road  |  nan  |  nan  |
    +-------+-------+-------+
    Summary:
    +-------+-------+-------+
    | aAcc  | mIoU  | mAcc  |
    +-------+-------+-------+
    | 60.00 | 33.33 | 50.00 |
    +-------+-------+-------+

Cells are centred; numbers are percentages rounded to 2 decimals; undefined values print "nan".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def format_value(value: Any) -> str:
    """A metric cell: floats as ``%.2f`` ("nan" when undefined), anything else as ``str``."""
    if isinstance(value, str):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if math.isnan(number) else f"{number:.2f}"


def _centre(text: str, width: int) -> str:
    """Centre ``text`` in ``width`` columns; an odd leftover space goes to the right."""
    spare = width - len(text)
    left = spare // 2
    return " " * left + text + " " * (spare - left)


def render_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A ``+---+`` bordered text table: border, header, border, rows, border (no trailing \\n)."""
    cells = [[format_value(c) for c in row] for row in rows]
    for row in cells:
        if len(row) != len(header):
            raise ValueError(f"Row {row} has {len(row)} cells but the header has {len(header)}.")
    widths = [len(h) for h in header]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(values: Sequence[str]) -> str:
        return "|" + "|".join(f" {_centre(v, w)} " for v, w in zip(values, widths)) + "|"

    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [border, line(list(header)), border, *(line(r) for r in cells), border]
    return "\n".join(out)


def format_table(results: Mapping[str, Any], class_names: Sequence[str]) -> str:
    """Per-class IoU / Acc table, then an aAcc / mIoU / mAcc summary, then one row per group.

    Args:
        results: the dict from ``SemSegMetric.compute()`` (percent values; per-class "IoU" and
            "Acc" sequences of length C in class order; optional "groups").
        class_names: the C class names, in class-index order.

    Returns:
        The text, lines joined by "\\n", without a trailing newline.
    """
    iou, acc = list(results["IoU"]), list(results["Acc"])
    if not len(iou) == len(acc) == len(class_names):
        raise ValueError(
            f"{len(class_names)} class names but {len(iou)} IoU and {len(acc)} Acc values; "
            "pass the class list the metric was built with."
        )
    parts = [
        "per class results:",
        render_table(["Class", "IoU", "Acc"], list(zip(class_names, iou, acc))),
        "Summary:",
        render_table(
            ["aAcc", "mIoU", "mAcc"], [[results["aAcc"], results["mIoU"], results["mAcc"]]]
        ),
    ]
    groups = results.get("groups") or {}
    if groups:
        rows = [[name, g["mIoU"], g["mAcc"]] for name, g in groups.items()]
        parts += ["Groups:", render_table(["Group", "mIoU", "mAcc"], rows)]
    return "\n".join(parts)
