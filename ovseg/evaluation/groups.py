"""Class groups (e.g. seen / unseen) for reporting a metric over subsets of the vocabulary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ovseg.errors import ConfigError


def resolve_groups(
    setting: Any, dataset: Any, class_names: Sequence[str]
) -> dict[str, list[str]] | None:
    """Named class groups from an ``evaluation.groups`` setting.

    Args:
        setting: ``"auto"`` (seen / unseen from the dataset's ``unseen`` attribute), None /
            False / ``"none"`` (no groups), or a mapping ``name -> [classes]``. A mapping with
            only ``unseen`` gets ``seen`` = every other class.
        dataset: the evaluated dataset (read for ``unseen`` when ``setting`` is ``"auto"``).
        class_names: the evaluated classes, in order.

    Returns:
        ``{"seen": [...], "unseen": [...]}``-like mapping, or None when there are no groups.
    """
    if setting in (None, False, "none"):
        return None
    if setting == "auto":
        unseen = [name for name in getattr(dataset, "unseen", []) if name in class_names]
        if not unseen:
            return None
        return {"seen": [n for n in class_names if n not in unseen], "unseen": unseen}
    if isinstance(setting, Mapping):
        groups = {str(k): [str(c) for c in v] for k, v in setting.items()}
        unknown = sorted({c for v in groups.values() for c in v} - set(class_names))
        if unknown:
            raise ConfigError(
                f"evaluation.groups names classes the dataset does not have: {unknown[:5]}."
            )
        if set(groups) == {"unseen"}:
            groups = {"seen": [n for n in class_names if n not in groups["unseen"]], **groups}
        return groups
    raise ConfigError("evaluation.groups must be 'auto', null, or a mapping of name -> classes.")


def group_means(values: Mapping[str, float], groups: Mapping[str, Sequence[str]]) -> dict:
    """Mean of per-class ``values`` over each group, skipping NaN (classes never evaluated)."""
    means = {}
    for name, members in groups.items():
        present = [values[c] for c in members if c in values and not math.isnan(values[c])]
        means[name] = math.fsum(present) / len(present) if present else float("nan")
    return means
