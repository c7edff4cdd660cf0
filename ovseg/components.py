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
    refcoco,
    synthetic,
    transforms,
    voc,
)
from ovseg.evaluation import instance_eval, semseg  # noqa: F401
from ovseg.evaluation import referring as referring_metrics  # noqa: F401
from ovseg.models import classifiers, clip_training, denseclip, necks, prompts  # noqa: F401
from ovseg.models.backbones import clip, clip_pyramid, proxyclip  # noqa: F401
from ovseg.models.decoders import sam, sam_training  # noqa: F401
from ovseg.pipelines import denseclip as denseclip_pipeline  # noqa: F401
from ovseg.pipelines import (  # noqa: F401
    instance,
    referring,
    semantic,
    vocab_free,
    vocab_free_instance,
)
from ovseg.vocab import cased  # noqa: F401
