"""Semantic FPN (Kirillov et al., 2019) as mmsegmentation builds it: FPN neck + FPN head.

* :class:`FPN` (neck): per level a 1x1 lateral convolution to ``out_channels``; top-down, each
  coarser lateral is upsampled (nearest, to the finer level's size) and added; then a 3x3
  convolution per level. No norm layers or activations (the recipes' ``FPN`` config).
* :class:`FPNHead`: per level ``max(1, log2(stride / stride_0))`` blocks of [3x3 conv, BN,
  ReLU], each followed (for levels coarser than the first) by a 2x bilinear upsampling; the
  level outputs are resized (bilinear) to the finest level and summed.
* :class:`SemanticFPN` (registered in ``NECKS``): both, then the vocabulary-agnostic
  :class:`~ovseg.models.necks.text_classifier.TextClassifier` instead of a fixed-size
  classifier; or, with ``num_classes``, mmseg's fixed ``K``-way classifier
  (:class:`FixedClassifier`: Dropout2d + 1x1 convolution, the layout of released closed-set
  checkpoints). Output logits ``(B, K, H/4, W/4)`` for stride-4 finest features.

Defaults follow DenseCLIP's ADE20K recipes: 256 FPN channels, 256 head channels, dropout 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.errors import ConfigError
from ovseg.models.necks.conv import ConvNormAct
from ovseg.models.necks.text_classifier import TextClassifier
from ovseg.registry import NECKS


def _check_levels(features: Sequence[Tensor], expected: int, what: str) -> None:
    if len(features) != expected:
        raise ConfigError(f"{what} expects {expected} feature levels, got {len(features)}.")


class FPN(nn.Module):
    """Feature pyramid neck: ``[(B, C_i, H_i, W_i)]`` -> ``[(B, out_channels, H_i, W_i)]``."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.lateral_convs = nn.ModuleList(
            ConvNormAct(c, out_channels, 1, norm=False, act=False) for c in self.in_channels
        )
        self.fpn_convs = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, padding=1, norm=False, act=False)
            for _ in self.in_channels
        )

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        _check_levels(features, len(self.in_channels), "FPN")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, features)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"
            )
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals)]


class FPNHead(nn.Module):
    """Panoptic-FPN semantic head: ``[(B, C_i, H/s_i, W/s_i)]`` -> ``(B, channels, H/s_0, W/s_0)``."""

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 256,
        feature_strides: Sequence[int] = (4, 8, 16, 32),
    ) -> None:
        super().__init__()
        strides = [int(s) for s in feature_strides]
        if len(strides) != len(in_channels) or min(strides) != strides[0]:
            raise ConfigError(
                f"feature_strides {strides} must give one stride per input level, finest first."
            )
        self.feature_strides = strides
        self.scale_heads = nn.ModuleList()
        for index, stride in enumerate(strides):
            length = max(1, int(math.log2(stride) - math.log2(strides[0])))
            blocks: list[nn.Module] = []
            for k in range(length):
                blocks.append(
                    ConvNormAct(in_channels[index] if k == 0 else channels, channels, 3, padding=1)
                )
                if stride != strides[0]:
                    blocks.append(_Upsample2x())
            self.scale_heads.append(nn.Sequential(*blocks))

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        _check_levels(features, len(self.feature_strides), "FPNHead")
        output = self.scale_heads[0](features[0])
        for head, x in zip(self.scale_heads[1:], features[1:]):
            output = output + F.interpolate(
                head(x), size=output.shape[2:], mode="bilinear", align_corners=False
            )
        return output


class _Upsample2x(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[2] * 2, x.shape[3] * 2)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FixedClassifier(nn.Module):
    """mmseg's ``conv_seg``: ``(B, C, H, W)`` -> ``(B, K, H, W)`` for a fixed list of ``K``
    classes (the class embeddings are not read); Dropout2d first, as ``BaseDecodeHead``."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: Tensor, text: Tensor) -> Tensor:
        return self.conv(self.dropout(features))


@NECKS.register()
class SemanticFPN(nn.Module):
    """FPN neck + FPN head + text classifier: pyramid features and class embeddings -> logits.

    Args:
        in_channels: channels of the four input levels (score features included).
        text_dim: ``D`` of the class embeddings.
        fpn_channels: FPN output channels (256).
        channels: head channels (256).
        feature_strides: strides of the inputs (4, 8, 16, 32).
        dropout: Dropout2d before the classifier (0.1).
        num_classes: None (default): the open-vocabulary :class:`TextClassifier`; an integer
            ``K``: the fixed ``K``-way :class:`FixedClassifier` of closed-set checkpoints.

    ``forward(features, text)``: ``features`` as above, ``text (B, K, D)`` -> ``(B, K, H/s_0,
    W/s_0)`` logits (see :class:`TextClassifier` for the open-vocabulary classifier).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        text_dim: int,
        fpn_channels: int = 256,
        channels: int = 256,
        feature_strides: Sequence[int] = (4, 8, 16, 32),
        dropout: float = 0.1,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.neck = FPN(in_channels, fpn_channels)
        self.head = FPNHead([fpn_channels] * len(in_channels), channels, feature_strides)
        self.classifier: nn.Module = (
            TextClassifier(channels, text_dim, dropout)
            if num_classes is None
            else FixedClassifier(channels, int(num_classes), dropout)
        )

    def forward(self, features: Sequence[Tensor], text: Tensor) -> Tensor:
        return self.classifier(self.head(self.neck(features)), text)
