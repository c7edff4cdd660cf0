"""A small registry: names -> classes or factories, with recursive ``build``.

Every component kind has one registry instance (``BACKBONES``, ``NECKS`` ...). Configs name a
component by ``type`` and pass the remaining keys as keyword arguments::

    BACKBONES.build({"type": "ClipBackbone", "model_name": "ViT-B-16"})

Nested mappings that carry a ``type`` key, and lists of them, are built first (depth first) with
the registry that owns their type name, so a component never receives a config object.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from ovseg.errors import ConfigError, UnknownComponentError

_ALL_REGISTRIES: dict[str, Registry] = {}


class Registry:
    """Maps names (and aliases) to classes or factory functions of one component kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        _ALL_REGISTRIES[kind] = self

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = ()) -> Callable:
        """Decorator registering ``obj`` under ``name`` (default: its ``__name__``) and aliases."""

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            for key in (name or obj.__name__, *aliases):
                existing = self._entries.get(key)
                if existing is not None and existing is not obj:
                    raise ConfigError(
                        f"{self.kind} registry already has {key!r} ({existing!r}); "
                        "pick another name or alias."
                    )
                self._entries[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """Return the entry registered as ``name``; unknown names list close matches."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownComponentError(
                f"No {self.kind} named {name!r}.{hint} Known: {', '.join(sorted(self._entries))}."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def build(self, cfg: Mapping[str, Any] | None, **defaults: Any) -> Any:
        """Build ``cfg['type']`` with the other keys (built recursively) as keyword arguments.

        ``defaults`` fill keys that ``cfg`` does not set. ``None`` builds to ``None``.
        """
        if cfg is None:
            return None
        if not isinstance(cfg, Mapping) or "type" not in cfg:
            raise ConfigError(
                f"A {self.kind} config must be a mapping with a 'type' key, got {cfg!r}."
            )
        kwargs = {**defaults, **{k: v for k, v in cfg.items() if k != "type"}}
        kwargs = {k: build_nested(v) for k, v in kwargs.items()}
        factory = self.get(cfg["type"])
        try:
            return factory(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"Cannot build {self.kind} {cfg['type']!r}: {exc}") from exc


def find_registry(type_name: str) -> Registry | None:
    """Return the registry holding ``type_name``, or None."""
    for registry in _ALL_REGISTRIES.values():
        if type_name in registry:
            return registry
    return None


def build_nested(value: Any) -> Any:
    """Build any ``{type: ...}`` mapping inside ``value`` whose type a registry knows."""
    if isinstance(value, Mapping):
        type_name = value.get("type")
        if isinstance(type_name, str):
            registry = find_registry(type_name)
            if registry is not None:
                return registry.build(value)
        return {k: build_nested(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(build_nested(v) for v in value)
    return value


BACKBONES = Registry("backbone")
PIPELINES = Registry("pipeline")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
TASKS = Registry("task")
EVALUATORS = Registry("evaluator")
NECKS = Registry("neck")  # backbone feature pyramids / decode heads (FPN, UPerNet)
MASK_DECODERS = Registry("mask_decoder")  # SAM adapters: prompts -> masks
POINT_SELECTORS = Registry("point_selector")  # similarity map -> point prompts
MASK_CLASSIFIERS = Registry("mask_classifier")  # mask -> class scores
VOCAB_SOURCES = Registry("vocab_source")  # vocabulary-free name search (CaSED)
