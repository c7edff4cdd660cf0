"""TextClassifier: class-name-generated classifier rows; any vocabulary size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovseg.models.necks import TextClassifier
from ovseg.models.necks.conv import ConvNormAct

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_logits_are_text_dot_projected_features():
    torch.manual_seed(0)
    clf = TextClassifier(in_channels=6, text_dim=4, dropout=0.1).eval()
    feats, text = torch.randn(2, 6, 3, 5), torch.randn(2, 7, 4)
    with torch.no_grad():
        logits = clf(feats, text)
    assert logits.shape == (2, 7, 3, 5)
    t_hat = text[1, 2] / text[1, 2].norm()
    pixel = (clf.proj.weight[:, :, 0, 0] @ feats[1, :, 2, 4] + clf.proj.bias).detach()
    assert logits[1, 2, 2, 4].item() == pytest.approx(float(t_hat @ pixel), rel=1e-5, abs=1e-7)
    # = a 1x1 classifier whose row k is Q^T t_hat_k and bias q0 . t_hat_k (one image)
    with torch.no_grad():
        rows = F.normalize(text[0], dim=-1) @ clf.proj.weight[:, :, 0, 0]
        bias = F.normalize(text[0], dim=-1) @ clf.proj.bias
        expected = F.conv2d(feats[:1], rows[:, :, None, None], bias)
    torch.testing.assert_close(logits[:1], expected, rtol=1e-5, atol=1e-7)


def test_initialisation_and_dropout():
    torch.manual_seed(0)
    clf = TextClassifier(in_channels=64, text_dim=64)
    assert 0.008 < float(clf.proj.weight.detach().std()) < 0.012 and not clf.proj.bias.any()
    assert isinstance(clf.dropout, torch.nn.Dropout2d) and clf.dropout.p == 0.1
    assert isinstance(TextClassifier(4, 4, dropout=0.0).dropout, torch.nn.Identity)


def test_conv_norm_act_follows_conv_module_defaults():
    torch.manual_seed(0)
    block = ConvNormAct(16, 32, 3, padding=1)
    assert block.conv.bias is None and block.bn is not None and block.act is not None
    assert bool((block.bn.weight == 1).all()) and not block.bn.bias.any()
    # Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (32 * 9))
    assert float(block.conv.weight.detach().std()) == pytest.approx((2 / 288) ** 0.5, rel=0.1)
    plain = ConvNormAct(4, 4, 1, norm=False, act=False)
    assert plain.conv.bias is not None and not plain.conv.bias.any()
    x = torch.randn(1, 4, 2, 2)
    torch.testing.assert_close(plain(x), F.conv2d(x, plain.conv.weight, plain.conv.bias))
