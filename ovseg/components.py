"""Imports every module that registers a built-in component (kept in one place on purpose)."""

from ovseg.cased import search as cased_search  # noqa: F401
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
    sam_prompts,
    synthetic,
    transforms,
    voc,
)
from ovseg.evaluation import instance_eval, semseg  # noqa: F401
from ovseg.evaluation import referring as referring_metrics  # noqa: F401
from ovseg.models import classifiers, denseclip, necks, prompts  # noqa: F401
from ovseg.models.backbones import clip  # noqa: F401
from ovseg.models.decoders import sam  # noqa: F401
from ovseg.pipelines import denseclip as denseclip_pipeline  # noqa: F401
from ovseg.pipelines import (  # noqa: F401
    instance,
    referring,
    semantic,
    vocab_free,
    vocab_free_instance,
)
from ovseg.tasks import contrastive_clip, prompted_sam  # noqa: F401
from ovseg.tasks import denseclip as denseclip_task  # noqa: F401
