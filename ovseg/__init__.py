"""ovseg: open-vocabulary segmentation and detection.

Configs name components by ``type``; each registry imports the modules of its built-in
components on its first lookup, so importing the package stays light
(``import ovseg.components`` registers them all at once).

The public names below are imported on first access (PEP 562), so ``import ovseg`` and the
command line's help, listing and argument checks start without torch or open_clip.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_LAZY = {
    "DEFAULT_PRESET": "ovseg.api",
    "build_pipeline_config": "ovseg.api",
    "create_pipeline": "ovseg.api",
    "list_presets": "ovseg.config",
    "load_config": "ovseg.config",
    "BACKBONES": "ovseg.registry",
    "DATASETS": "ovseg.registry",
    "EVALUATORS": "ovseg.registry",
    "MASK_CLASSIFIERS": "ovseg.registry",
    "MASK_DECODERS": "ovseg.registry",
    "NECKS": "ovseg.registry",
    "PIPELINES": "ovseg.registry",
    "POINT_SELECTORS": "ovseg.registry",
    "TASKS": "ovseg.registry",
    "TRANSFORMS": "ovseg.registry",
    "VOCAB_SOURCES": "ovseg.registry",
    "Registry": "ovseg.registry",
    "Instances": "ovseg.structures",
    "OVSegResult": "ovseg.structures",
    "PointPrompts": "ovseg.structures",
    "ReferringResult": "ovseg.structures",
    "Vocabulary": "ovseg.vocab",
}

__all__ = [  # the names of _LAZY (a literal, so that linters see what the package exports)
    "BACKBONES",
    "DATASETS",
    "DEFAULT_PRESET",
    "EVALUATORS",
    "MASK_CLASSIFIERS",
    "MASK_DECODERS",
    "NECKS",
    "PIPELINES",
    "POINT_SELECTORS",
    "TASKS",
    "TRANSFORMS",
    "VOCAB_SOURCES",
    "Instances",
    "OVSegResult",
    "PointPrompts",
    "ReferringResult",
    "Registry",
    "Vocabulary",
    "build_pipeline_config",
    "create_pipeline",
    "list_presets",
    "load_config",
]

if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from ovseg.api import DEFAULT_PRESET, build_pipeline_config, create_pipeline
    from ovseg.config import list_presets, load_config
    from ovseg.registry import (
        BACKBONES,
        DATASETS,
        EVALUATORS,
        MASK_CLASSIFIERS,
        MASK_DECODERS,
        NECKS,
        PIPELINES,
        POINT_SELECTORS,
        TASKS,
        TRANSFORMS,
        VOCAB_SOURCES,
        Registry,
    )
    from ovseg.structures import Instances, OVSegResult, PointPrompts, ReferringResult
    from ovseg.vocab import Vocabulary


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ovseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
