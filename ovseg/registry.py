"""A small registry: names -> classes or factories, with recursive ``build``.

Every component kind has one registry instance (``BACKBONES``, ``NECKS`` ...). Configs name a
component by ``type`` and pass the remaining keys as keyword arguments::

    BACKBONES.build({"type": "ClipBackbone", "model_name": "ViT-B-16"})

Nested mappings that carry a ``type`` key, and lists of them, are built first (depth first) with
the registry that owns their type name, so a component never receives a config object.

Each built-in registry knows the modules that register its built-in components and imports
them on its first lookup (``get``, ``in``, ``names``, ``build``), so ``import ovseg`` does not
import every component. ``ovseg.components.load_all()`` imports them all at once.
"""

from __future__ import annotations

import difflib
import importlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from ovseg.errors import ConfigError, UnknownComponentError

_ALL_REGISTRIES: dict[str, Registry] = {}
#: components built so far in the outermost ``build`` call, by config (registries that share)
_SHARED_BUILDS: ContextVar[dict[tuple[str, str], Any] | None] = ContextVar(
    "_SHARED_BUILDS", default=None
)


def _config_key(cfg: Mapping[str, Any]) -> str | None:
    """A canonical text of a plain config, or None when it holds anything but plain values."""

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        raise TypeError

    try:
        return json.dumps(plain(cfg), sort_keys=True)
    except TypeError:
        return None


class Registry:
    """Maps names (and aliases) to classes or factory functions of one component kind."""

    def __init__(
        self, kind: str, builtins: Sequence[str] = (), share_identical: bool = False
    ) -> None:
        """``builtins``: modules (dotted names) whose import registers the built-in entries.

        ``share_identical``: within one outermost :meth:`build` (of any registry), configs of
        this kind that are equal (plain values only) build one object, used wherever they occur,
        e.g. the CLIP named by two sub-pipelines of one pipeline is loaded once.
        """
        self.kind = kind
        self.share_identical = share_identical
        self._entries: dict[str, Callable[..., Any]] = {}
        self._builtins = tuple(builtins)
        self._loaded = not self._builtins
        self._loading = False
        self._lock = threading.RLock()
        _ALL_REGISTRIES[kind] = self

    @property
    def builtin_modules(self) -> tuple[str, ...]:
        return self._builtins

    def load_builtins(self) -> None:
        """Import the modules of the built-in entries (once; a failed import is retried)."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:  # done, or this thread is importing them now
                return
            self._loading = True
            try:
                for module in self._builtins:
                    importlib.import_module(module)
            finally:
                self._loading = False
            self._loaded = True

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
        self.load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownComponentError(
                f"No {self.kind} named {name!r}.{hint} Known: {', '.join(sorted(self._entries))}."
            ) from None

    def __contains__(self, name: object) -> bool:
        self.load_builtins()
        return name in self._entries

    def names(self) -> list[str]:
        self.load_builtins()
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
        shared = _SHARED_BUILDS.get()
        token = None
        if shared is None:  # the outermost build: components shared until it returns
            shared = {}
            token = _SHARED_BUILDS.set(shared)
        try:
            key = _config_key(cfg) if self.share_identical and not defaults else None
            if key is not None and (self.kind, key) in shared:
                return shared[(self.kind, key)]
            built = self._build(cfg, defaults)
            if key is not None:
                shared[(self.kind, key)] = built
            return built
        finally:
            if token is not None:
                _SHARED_BUILDS.reset(token)

    def _build(self, cfg: Mapping[str, Any], defaults: Mapping[str, Any]) -> Any:
        kwargs = {**defaults, **{k: v for k, v in cfg.items() if k != "type"}}
        kwargs = {k: build_nested(v) for k, v in kwargs.items()}
        factory = self.get(cfg["type"])
        try:
            return factory(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"Cannot build {self.kind} {cfg['type']!r}: {exc}") from exc

    def build_or_pass(self, value: Any, what: str) -> Any:
        """``value`` itself when it is a built component, else :meth:`build` of its config.

        Raises:
            ConfigError: ``value`` is None (the component ``what`` is required).
        """
        if isinstance(value, Mapping):
            return self.build(value)
        if value is None:
            raise ConfigError(f"The pipeline needs a {what}; give its config ({{type: ...}}).")
        return value


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


def _modules(package: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{package}.{name}" for name in names)


BACKBONES = Registry(
    "backbone",
    _modules("ovseg.models.backbones", "clip", "proxyclip", "scclip"),
    share_identical=True,
)
PIPELINES = Registry(
    "pipeline",
    _modules(
        "ovseg.pipelines",
        "semantic",
        "denseclip",
        "referring",
        "grounded_referring",
        "instance",
        "vocab_free",
        "vocab_free_instance",
        "painted_semantic",
        "semantic_instance",
        "detection",
        "reasoning",
        "video",
    ),
)
DATASETS = Registry(
    "dataset",
    _modules(
        "ovseg.data",
        "ade20k",
        "captions",
        "cityscapes",
        "coco_instances",
        "coco_object",
        "coco_stuff",
        "detectron2",
        "folder",
        "lvis",
        "pascal_context",
        "reasonseg",
        "refcoco",
        "sam_prompts",
        "synthetic",
        "synthetic_detection",
        "synthetic_reasoning",
        "transforms",
        "voc",
    ),
)
TRANSFORMS = Registry("transform", _modules("ovseg.data", "transforms"))
TASKS = Registry(
    "task",
    _modules(
        "ovseg.tasks", "contrastive_clip", "denseclip", "owl_detection", "prompted_sam", "read"
    ),
)
EVALUATORS = Registry(
    "evaluator",
    _modules(
        "ovseg.evaluation",
        "semseg_evaluator",
        "instance_evaluator",
        "reasoning_evaluator",
        "referring_evaluator",
        "vocab_free_evaluator",
        "detection_evaluator",
        "lvis_evaluator",
        "grounding_evaluator",
    ),
)
# backbone feature pyramids / decode heads (FPN, UPerNet)
NECKS = Registry("neck", _modules("ovseg.models.necks", "fpn", "uper"))
# SAM adapters: prompts -> masks
MASK_DECODERS = Registry("mask_decoder", _modules("ovseg.models.decoders", "sam", "sam2", "sam_hq"))
# similarity map -> point prompts
POINT_SELECTORS = Registry("point_selector", _modules("ovseg.models.prompts", "peaks", "sasp"))
# mask -> class scores
MASK_CLASSIFIERS = Registry(
    "mask_classifier", _modules("ovseg.models.classifiers", "mask_pooling", "masked_crop")
)
# images + text queries -> scored boxes (OWL-ViT, OWLv2, Grounding DINO, MDETR, CLIP-OWL)
DETECTORS = Registry(
    "detector", _modules("ovseg.models.detectors", "owl", "grounding_dino", "mdetr", "clip_owl")
)
# vocabulary-free name search (CaSED)
VOCAB_SOURCES = Registry("vocab_source", _modules("ovseg.cased", "search"))
