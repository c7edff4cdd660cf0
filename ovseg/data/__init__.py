"""Datasets: readers (ADE20K layout, caption CSVs) and the synthetic open-vocabulary world."""

from ovseg.data.ade20k import ADE20KDataset
from ovseg.data.captions import CsvCaptionDataset
from ovseg.data.synthetic import (
    CLASS_NAMES,
    SEEN_CLASSES,
    STUFF_CLASSES,
    THING_CLASSES,
    UNSEEN_CLASSES,
    Scene,
    SceneObject,
    SyntheticSceneDataset,
    generate_scene,
    scene_rng,
)
from ovseg.data.writers import write_synthetic_world

__all__ = [
    "ADE20KDataset",
    "CLASS_NAMES",
    "CsvCaptionDataset",
    "SEEN_CLASSES",
    "STUFF_CLASSES",
    "Scene",
    "SceneObject",
    "SyntheticSceneDataset",
    "THING_CLASSES",
    "UNSEEN_CLASSES",
    "generate_scene",
    "scene_rng",
    "write_synthetic_world",
]
