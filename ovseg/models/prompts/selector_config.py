"""The config that rebuilds a built point selector, for writing it into a model folder."""

from __future__ import annotations

import inspect
from typing import Any

from ovseg.registry import POINT_SELECTORS


def selector_config(selector: Any) -> dict[str, Any] | None:
    """``{type: NAME, <arguments that differ from their defaults>}`` (arguments in name order),
    which ``POINT_SELECTORS.build`` turns back into an equal selector; None when ``selector`` is
    None, not a registered class, or does not keep every ``__init__`` argument as an attribute
    of the same name (its settings cannot be read back)."""
    if selector is None:
        return None
    name = type(selector).__name__
    if name not in POINT_SELECTORS or POINT_SELECTORS.get(name) is not type(selector):
        return None
    config: dict[str, Any] = {}
    for parameter in inspect.signature(type(selector).__init__).parameters.values():
        if parameter.name == "self" or parameter.kind in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
        ):
            continue
        if not hasattr(selector, parameter.name):
            return None
        value = getattr(selector, parameter.name)
        if parameter.default is parameter.empty or value != parameter.default:
            config[parameter.name] = value
    return {"type": name, **dict(sorted(config.items()))}
