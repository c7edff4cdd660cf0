"""Registry: registration, aliases, close-match errors and recursive build."""

from __future__ import annotations

import pytest

from ovseg.errors import ConfigError, UnknownComponentError
from ovseg.registry import Registry, build_nested


def test_register_get_alias_and_build_nested():
    parts = Registry("test-part")
    wholes = Registry("test-whole")

    @parts.register(aliases=("wheel_alias",))
    class Wheel:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    @wholes.register()
    class Car:
        def __init__(self, wheels, engine=None) -> None:
            self.wheels, self.engine = wheels, engine

    car = wholes.build(
        {"type": "Car", "wheels": [{"type": "Wheel", "size": 3}, {"type": "wheel_alias"}]},
    )
    assert [w.size for w in car.wheels] == [3, 1]
    assert parts.get("wheel_alias") is Wheel
    assert build_nested({"x": {"type": "not-registered", "a": 1}}) == {
        "x": {"type": "not-registered", "a": 1}
    }


def test_unknown_name_lists_close_matches():
    reg = Registry("test-close")
    reg.register("ClipBackbone")(object)
    with pytest.raises(UnknownComponentError, match="Did you mean 'ClipBackbone'"):
        reg.get("ClipBackbon")
    with pytest.raises(KeyError):  # also a KeyError, as callers may expect
        reg.get("nothing-like-it")


def test_duplicate_name_and_bad_config():
    reg = Registry("test-dup")
    reg.register("A")(int)
    with pytest.raises(ConfigError, match="already has"):
        reg.register("A")(float)
    with pytest.raises(ConfigError, match="'type' key"):
        reg.build({"size": 3})

    @reg.register()
    def needs_x(x):
        return x

    with pytest.raises(ConfigError, match="Cannot build"):
        reg.build({"type": "needs_x", "y": 1})


def test_a_sharing_registry_builds_equal_configs_once_per_outermost_build():
    encoders = Registry("test-shared-encoder", share_identical=True)
    parts = Registry("test-unshared-part")
    wholes = Registry("test-whole-of-parts")

    @encoders.register()
    class Encoder:
        def __init__(self, width: int = 1) -> None:
            self.width = width

    @parts.register()
    class Part:
        def __init__(self, encoder, size: int = 1) -> None:
            self.encoder, self.size = encoder, size

    @wholes.register()
    class Whole:
        def __init__(self, first, second, third) -> None:
            self.first, self.second, self.third = first, second, third

    encoder = {"type": "Encoder", "width": 4}
    whole = wholes.build(
        {
            "type": "Whole",
            "first": {"type": "Part", "encoder": dict(encoder)},
            "second": {"type": "Part", "encoder": dict(encoder)},
            "third": {"type": "Part", "encoder": {"type": "Encoder", "width": 5}},
        }
    )
    assert whole.first.encoder is whole.second.encoder  # equal configs: one object
    assert whole.third.encoder is not whole.first.encoder  # another config: its own
    assert whole.first is not whole.second  # the registry that does not share builds twice
    assert encoders.build(encoder) is not encoders.build(encoder)  # each build starts afresh
