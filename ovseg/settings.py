"""Merging a component's settings with its defaults, refusing keys it does not know."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ovseg.errors import ConfigError

__all__ = ["merge_settings"]


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
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"Unknown {what} keys {unknown}; known: {sorted(defaults)}.")
    return {**defaults, **given}
