"""Merging a component's settings with its defaults, refusing keys it does not know."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ovseg.errors import ConfigError

__all__ = ["check_known_keys", "merge_settings"]


def check_known_keys(given: Iterable[str], known: Iterable[str], what: str) -> None:
    """Raise :class:`ConfigError` naming the keys of ``given`` that ``known`` lacks.

    Args:
        given: the keys a user gave.
        known: every key the component accepts (a dict's keys, a dataclass's field names).
        what: the name of the settings block in messages (``"inference"``, ``"SAM config"``).
    """
    known = set(known)
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"Unknown {what} keys {unknown}; known: {sorted(known)}.")


def merge_settings(
    defaults: Mapping[str, Any], given: Mapping[str, Any] | None, what: str
) -> dict[str, Any]:
    """``defaults`` updated with ``given``; a key absent from ``defaults`` raises.

    Args:
        defaults: every known key with its default value.
        given: the user's values (None: none).
        what: the name of the settings block in messages (``"inference"``, ``"postprocess"``).

    Raises:
        ConfigError: ``given`` holds a key that ``defaults`` does not know; the message lists
            the known keys.
    """
    given = dict(given or {})
    check_known_keys(given, defaults, what)
    return {**defaults, **given}
