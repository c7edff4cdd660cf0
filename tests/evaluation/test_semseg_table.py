"""format_table / render_table: mmseg-style bordered text tables."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.evaluation.semseg import SemSegMetric
from ovseg.evaluation.table import format_table, format_value, render_table

NAMES = ["sky", "road", "traffic light"]


def _results(groups=None):
    metric = SemSegMetric(3, NAMES, groups=groups)
    # sky: IoU 1/2, Acc 1/1; road: IoU 2/3, Acc 2/3; traffic light absent -> nan
    metric.process(np.array([[0, 0, 1, 1]]), np.array([[0, 1, 1, 1]]))
    return metric.compute()


def test_per_class_and_summary_tables() -> None:
    assert format_table(_results(), NAMES).split("\n") == [
        "per class results:",
        "+---------------+-------+--------+",
        "|     Class     |  IoU  |  Acc   |",
        "+---------------+-------+--------+",
        "|      sky      | 50.00 | 100.00 |",
        "|     road      | 66.67 | 66.67  |",
        "| traffic light |  nan  |  nan   |",
        "+---------------+-------+--------+",
        "Summary:",
        "+-------+-------+-------+",
        "| aAcc  | mIoU  | mAcc  |",
        "+-------+-------+-------+",
        "| 75.00 | 58.33 | 83.33 |",
        "+-------+-------+-------+",
    ]


def test_group_rows_only_when_groups_given() -> None:
    assert "Groups:" not in format_table(_results(), NAMES)
    text = format_table(_results({"seen": ["sky"], "unseen": ["road", "traffic light"]}), NAMES)
    assert text.split("Groups:\n", 1)[1].split("\n") == [
        "+--------+-------+--------+",
        "| Group  | mIoU  |  mAcc  |",
        "+--------+-------+--------+",
        "|  seen  | 50.00 | 100.00 |",
        "| unseen | 66.67 | 66.67  |",
        "+--------+-------+--------+",
    ]


def test_render_table_widths_and_errors() -> None:
    lines = render_table(["A", "Value"], [["x", 1.0], ["longer", float("nan")]]).split("\n")
    assert len({len(line) for line in lines}) == 1
    assert lines[3:5] == ["|   x    | 1.00  |", "| longer |  nan  |"]
    with pytest.raises(ValueError, match="cells"):
        render_table(["A", "B"], [["only one"]])
    assert format_value(np.float32(12.345)) == "12.35"
    assert format_value("txt") == "txt"


def test_format_table_rejects_wrong_class_list() -> None:
    with pytest.raises(ValueError, match="class names"):
        format_table(_results(), ["a", "b"])
