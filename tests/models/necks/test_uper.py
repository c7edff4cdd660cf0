"""UPerNet: PPM + FPN fusion re-derived by hand; the registered decode head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.models.necks import UPerNet
from ovseg.registry import NECKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHANNELS = [6, 8, 10, 12]


def _up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def test_uper_forward_matches_a_hand_derivation():
    torch.manual_seed(0)
    head = UPerNet(CHANNELS, text_dim=5, channels=8, pool_scales=(1, 2, 3, 6), dropout=0.0).eval()
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, c, 24 >> i, 24 >> i, generator=g) for i, c in enumerate(CHANNELS)]
    text = torch.randn(2, 4, 5, generator=g)
    top = feats[3]
    ppm = [_up(stage(top), top.shape[2:]) for stage in head.ppm.stages]
    assert [stage[0].output_size for stage in head.ppm.stages] == [1, 2, 3, 6]
    laterals = [conv(x) for conv, x in zip(head.lateral_convs, feats[:3])]
    laterals.append(head.bottleneck(torch.cat([top, *ppm], dim=1)))
    for i in (3, 2, 1):
        laterals[i - 1] = laterals[i - 1] + _up(laterals[i], laterals[i - 1].shape[2:])
    outs = [conv(x) for conv, x in zip(head.fpn_convs, laterals[:3])] + [laterals[3]]
    fused = head.fpn_bottleneck(torch.cat([outs[0]] + [_up(o, (24, 24)) for o in outs[1:]], 1))
    expected = head.classifier(fused, text)
    got = head(feats, text)
    assert got.shape == (2, 4, 24, 24)
    torch.testing.assert_close(got, expected)


def test_uper_registered_forward_backward_and_errors():
    head = NECKS.build({"type": "UPerNet", "channels": 8}, in_channels=CHANNELS, text_dim=5)
    assert isinstance(head, UPerNet)
    assert head.bottleneck.conv.in_channels == 12 + 4 * 8
    assert head.fpn_bottleneck.conv.in_channels == 4 * 8
    feats = [torch.randn(2, c, 16 >> i, 16 >> i) for i, c in enumerate(CHANNELS)]
    logits = head(feats, torch.randn(2, 9, 5))
    assert logits.shape == (2, 9, 16, 16)
    logits.mean().backward()
    assert all(p.grad is not None for p in head.parameters())
    with pytest.raises(ConfigError):
        head(feats[:3], torch.randn(2, 9, 5))
    with pytest.raises(ConfigError):
        UPerNet([4], text_dim=5)
