"""Imports every module that registers a built-in component (kept in one place on purpose)."""

from ovseg.data import ade20k, captions, synthetic  # noqa: F401
from ovseg.evaluation import semseg  # noqa: F401
from ovseg.models import clip_training  # noqa: F401
from ovseg.models.backbones import clip  # noqa: F401
from ovseg.pipelines import semantic  # noqa: F401
