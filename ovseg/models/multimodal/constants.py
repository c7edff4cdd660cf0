"""Token constants shared by LLaVA-style multimodal models and READ (LLaVA's values)."""

from __future__ import annotations

IGNORE_INDEX = -100  # label of positions the language-model loss skips
IMAGE_TOKEN_INDEX = -200  # placeholder id of ``<image>``; replaced by the image tokens
DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"
SEG_TOKEN = "[SEG]"

# LISA / READ loss weights: language-model cross-entropy, mask DICE, mask sigmoid BCE
DEFAULT_CE_LOSS_WEIGHT = 1.0
DEFAULT_DICE_LOSS_WEIGHT = 0.5
DEFAULT_BCE_LOSS_WEIGHT = 2.0
