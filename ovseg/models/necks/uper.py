"""UPerNet (Xiao et al., 2018) as mmsegmentation's ``UPerHead``: PPM on the coarsest level + FPN.

* PPM: for each pool scale (1, 2, 3, 6) adaptive average pooling, a 1x1 [conv, BN, ReLU] to
  ``channels``, bilinear upsampling back; concatenated with the input and fused by a 3x3
  [conv, BN, ReLU] (``bottleneck``) into the top lateral.
* FPN: 1x1 [conv, BN, ReLU] laterals on the other levels; top-down bilinear upsampling and
  addition; a 3x3 [conv, BN, ReLU] per level but the top; every level resized (bilinear) to the
  finest and concatenated; a 3x3 [conv, BN, ReLU] (``fpn_bottleneck``).
* Then the vocabulary-agnostic :class:`~ovseg.models.necks.text_classifier.TextClassifier`.

Registered in ``NECKS`` as ``UPerNet``. Defaults: 512 channels, pool scales (1, 2, 3, 6),
dropout 0.1 (mmseg's UPerNet configs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.errors import ConfigError
from ovseg.models.necks.conv import ConvNormAct
from ovseg.models.necks.text_classifier import TextClassifier
from ovseg.registry import NECKS


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """``(B, C, h, w)`` -> list of ``(B, channels, h, w)``, one per pool scale."""

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(int(s)), ConvNormAct(in_channels, channels, 1))
            for s in pool_scales
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        return [_resize(stage(x), x.shape[2:]) for stage in self.stages]


@NECKS.register(aliases=("UPerHead",))
class UPerNet(nn.Module):
    """PPM + FPN fusion + text classifier: pyramid features and class embeddings -> logits.

    Args:
        in_channels: channels of the input levels, finest first (score features included).
        text_dim: ``D`` of the class embeddings.
        channels: width of every internal layer (512).
        pool_scales: PPM output sizes (1, 2, 3, 6).
        dropout: Dropout2d before the classifier (0.1).

    ``forward(features, text)``: ``text (B, K, D)`` -> ``(B, K, H_0, W_0)`` at the finest level.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        text_dim: int,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        if len(self.in_channels) < 2:
            raise ConfigError("UPerNet needs at least two feature levels.")
        top = self.in_channels[-1]
        self.ppm = PyramidPooling(top, channels, pool_scales)
        self.bottleneck = ConvNormAct(top + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(
            ConvNormAct(c, channels, 1) for c in self.in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            ConvNormAct(channels, channels, 3, padding=1) for _ in self.in_channels[:-1]
        )
        self.fpn_bottleneck = ConvNormAct(len(self.in_channels) * channels, channels, 3, padding=1)
        self.classifier = TextClassifier(channels, text_dim, dropout)

    def forward(self, features: Sequence[Tensor], text: Tensor) -> Tensor:
        if len(features) != len(self.in_channels):
            raise ConfigError(
                f"UPerNet expects {len(self.in_channels)} feature levels, got {len(features)}."
            )
        top = features[-1]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, features[:-1])]
        laterals.append(self.bottleneck(torch.cat([top, *self.ppm(top)], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])]
        outs.append(laterals[-1])
        size = outs[0].shape[2:]
        fused = torch.cat([outs[0], *(_resize(x, size) for x in outs[1:])], dim=1)
        return self.classifier(self.fpn_bottleneck(fused), text)
