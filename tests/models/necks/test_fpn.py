"""Semantic FPN: the FPN neck and head re-derived by hand; the registered decode head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.models.necks import FPN, FPNHead, SemanticFPN
from ovseg.registry import NECKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHANNELS = [6, 8, 10, 12]


def _features(batch=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, size >> i, size >> i, generator=g) for i, c in enumerate(CHANNELS)
    ]


def test_fpn_neck_is_laterals_top_down_nearest_then_3x3():
    torch.manual_seed(0)
    neck = FPN(CHANNELS, out_channels=4)
    feats = _features()
    out = neck(feats)
    assert [tuple(o.shape[1:]) for o in out] == [(4, 16, 16), (4, 8, 8), (4, 4, 4), (4, 2, 2)]
    lat = [F.conv2d(x, c.conv.weight, c.conv.bias) for x, c in zip(feats, neck.lateral_convs)]
    for i in (3, 2, 1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], scale_factor=2, mode="nearest")
    expected = [
        F.conv2d(x, c.conv.weight, c.conv.bias, padding=1) for x, c in zip(lat, neck.fpn_convs)
    ]
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert all(c.bn is None and c.act is None for c in neck.lateral_convs)
    with pytest.raises(ConfigError):
        neck(feats[:3])


def test_fpn_head_depth_per_level_and_sum():
    torch.manual_seed(0)
    head = FPNHead([4, 4, 4, 4], channels=5).eval()
    convs = [sum(1 for m in h if hasattr(m, "conv")) for h in head.scale_heads]
    assert convs == [1, 1, 2, 3]  # max(1, log2(stride / 4)) blocks of [conv, BN, ReLU]
    feats = [torch.randn(1, 4, 16 >> i, 16 >> i) for i in range(4)]
    out = head(feats)
    assert out.shape == (1, 5, 16, 16)
    expected = head.scale_heads[0](feats[0])
    for h, x in zip(head.scale_heads[1:], feats[1:]):
        expected = expected + F.interpolate(
            h(x), size=(16, 16), mode="bilinear", align_corners=False
        )
    torch.testing.assert_close(out, expected)
    # level 3: conv, up x2, conv, up x2, conv, up x2 -> 2 px become 16 px
    assert head.scale_heads[3](feats[3]).shape[-1] == 16
    with pytest.raises(ConfigError):
        FPNHead([4, 4], feature_strides=[8, 4])


def test_semantic_fpn_any_vocabulary_forward_backward():
    torch.manual_seed(0)
    head = NECKS.build(
        {"type": "SemanticFPN", "fpn_channels": 8, "channels": 8}, in_channels=CHANNELS, text_dim=6
    )
    assert isinstance(head, SemanticFPN)
    feats = [f.requires_grad_() for f in _features()]
    for k in (3, 7):
        text = torch.randn(2, k, 6, requires_grad=True)
        logits = head(feats, text)
        assert logits.shape == (2, k, 16, 16)
        logits.square().mean().backward()
        assert text.grad is not None and feats[3].grad is not None
    assert all(p.grad is not None for p in head.parameters())
