"""DenseCLIP's language-guided parts: prompt learner, context decoder, score maps, losses.

See :mod:`ovseg.models.denseclip` for the segmentor that combines them with a
:class:`~ovseg.models.backbones.clip_pyramid.ClipPyramid` and a decode head from ``NECKS``.
"""

from ovseg.models.heads.denseclip.context_decoder import ContextDecoder, ContextDecoderLayer
from ovseg.models.heads.denseclip.losses import score_map_loss, segmentation_cross_entropy
from ovseg.models.heads.denseclip.prompt_learner import FrozenTextEncoder, PromptLearner
from ovseg.models.heads.denseclip.score_map import (
    pixel_text_score_map,
    score_text_features,
    visual_context,
)

__all__ = [
    "ContextDecoder",
    "ContextDecoderLayer",
    "FrozenTextEncoder",
    "PromptLearner",
    "pixel_text_score_map",
    "score_map_loss",
    "score_text_features",
    "segmentation_cross_entropy",
    "visual_context",
]
