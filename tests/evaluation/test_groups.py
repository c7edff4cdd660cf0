"""Class groups for seen / unseen reporting."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from ovseg.errors import ConfigError
from ovseg.evaluation.groups import group_means, resolve_groups

NAMES = ["a", "b", "c", "d"]


def test_auto_uses_the_dataset_unseen_list():
    dataset = SimpleNamespace(unseen=["c", "zzz"])
    assert resolve_groups("auto", dataset, NAMES) == {"seen": ["a", "b", "d"], "unseen": ["c"]}
    assert resolve_groups("auto", SimpleNamespace(), NAMES) is None
    assert resolve_groups(None, dataset, NAMES) is None


def test_mapping_with_only_unseen_gets_seen_as_the_rest():
    groups = resolve_groups({"unseen": ["b", "d"]}, None, NAMES)
    assert groups == {"seen": ["a", "c"], "unseen": ["b", "d"]}
    assert resolve_groups({"x": ["a"]}, None, NAMES) == {"x": ["a"]}


def test_unknown_classes_and_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="does not have"):
        resolve_groups({"unseen": ["nope"]}, None, NAMES)
    with pytest.raises(ConfigError, match="must be 'auto'"):
        resolve_groups(3, None, NAMES)


def test_group_means_skip_nan_and_absent_classes():
    values = {"a": 10.0, "b": float("nan"), "c": 30.0}
    means = group_means(values, {"g1": ["a", "b", "c"], "g2": ["b", "d"]})
    assert means["g1"] == pytest.approx(20.0)
    assert math.isnan(means["g2"])
