"""Datasets: readers (ADE20K layout, caption CSVs) and the synthetic open-vocabulary world."""

from ovseg.data.ade20k import ADE20K847Dataset, ADE20KDataset
from ovseg.data.captions import CsvCaptionDataset
from ovseg.data.cityscapes import CityscapesDataset
from ovseg.data.coco_instances import COCOInstances
from ovseg.data.coco_object import COCOObjectDataset
from ovseg.data.coco_stuff import COCOStuffDataset
from ovseg.data.folder import FolderDataset
from ovseg.data.pascal_context import PascalContextDataset
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
from ovseg.data.voc import PascalVOCDataset
from ovseg.data.writers import write_synthetic_world

__all__ = [
    "ADE20K847Dataset",
    "ADE20KDataset",
    "COCOInstances",
    "COCOObjectDataset",
    "COCOStuffDataset",
    "CityscapesDataset",
    "FolderDataset",
    "PascalContextDataset",
    "PascalVOCDataset",
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
