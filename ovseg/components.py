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
from ovseg.evaluation import instance_eval, semseg  # noqa: F401
from ovseg.evaluation import referring as referring_metrics  # noqa: F401
from ovseg.models import classifiers, clip_training, prompts  # noqa: F401
from ovseg.models.backbones import clip  # noqa: F401
from ovseg.models.decoders import sam, sam_training  # noqa: F401
from ovseg.pipelines import instance, referring, semantic  # noqa: F401
