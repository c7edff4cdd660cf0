"""Imports every module that registers a built-in component (kept in one place on purpose)."""

from ovseg.data import (  # noqa: F401
    ade20k,
    captions,
    cityscapes,
    coco_instances,
    coco_object,
    coco_stuff,
    folder,
    pascal_context,
    synthetic,
    voc,
)
from ovseg.evaluation import instance_eval, referring, semseg  # noqa: F401
from ovseg.models import clip_training  # noqa: F401
from ovseg.models.backbones import clip  # noqa: F401
from ovseg.pipelines import semantic  # noqa: F401
