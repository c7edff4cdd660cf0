"""``ovseg.commands.common``: argument handling shared by the commands."""

from __future__ import annotations

from ovseg.commands.common import split_overrides


def test_overrides_are_split_from_positionals_in_order(tmp_path):
    rest, overrides = split_overrides(["img.png", "a.b=1", "out", "c=x=y"])
    assert rest == ["img.png", "out"]
    assert overrides == ["a.b=1", "c=x=y"]


def test_an_existing_path_with_an_equals_sign_stays_positional(tmp_path):
    odd = tmp_path / "k=v.png"
    odd.write_bytes(b"")
    rest, overrides = split_overrides([str(odd), "k=v"])
    assert rest == [str(odd)] and overrides == ["k=v"]
