"""ovseg: open-vocabulary segmentation and detection.

Configs name components by ``type``; each registry imports the modules of its built-in
components on its first lookup, so importing the package stays light
(``import ovseg.components`` registers them all at once).
"""

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

__version__ = "0.1.0"

__all__ = [
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
