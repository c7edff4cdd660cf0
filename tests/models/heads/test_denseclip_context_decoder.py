"""ContextDecoder: the reference layout, initialisation and attention against torch's own MHA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ovseg.errors import ConfigError
from ovseg.models.heads.denseclip import ContextDecoder, ContextDecoderLayer
from ovseg.models.heads.denseclip.context_decoder import MultiHeadAttention

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shapes_and_layout():
    torch.manual_seed(0)
    decoder = ContextDecoder(visual_dim=48)
    assert len(decoder.decoder) == 3
    assert [type(m) for m in decoder.memory_proj] == [nn.LayerNorm, nn.Linear, nn.LayerNorm]
    assert [type(m) for m in decoder.text_proj] == [nn.LayerNorm, nn.Linear]
    assert [type(m) for m in decoder.out_proj] == [nn.LayerNorm, nn.Linear]
    assert decoder.text_proj[1].out_features == 256 and decoder.out_proj[1].out_features == 48
    layer = decoder.decoder[0]
    assert layer.self_attn.heads == 4 and layer.self_attn.q_proj.bias is None
    assert layer.mlp[0].out_features == 1024 and isinstance(layer.mlp[1], nn.GELU)
    text, visual = torch.randn(2, 5, 48), torch.randn(2, 1 + 12, 48)
    assert decoder(text, visual).shape == (2, 5, 48)
    small = ContextDecoder(48, width=16, heads=2, layers=1, dropout=0.0)
    assert small(text, visual).shape == (2, 5, 48) and len(small.decoder) == 1
    with pytest.raises(ConfigError):
        ContextDecoder(48, width=18, heads=4)


def test_initialisation():
    torch.manual_seed(0)
    decoder = ContextDecoder(visual_dim=64)
    linears = [m for m in decoder.modules() if isinstance(m, nn.Linear)]
    weights = torch.cat([m.weight.detach().flatten() for m in linears])
    assert 0.018 < float(weights.std()) < 0.022 and float(weights.abs().max()) < 0.2
    assert all(m.bias is None or not m.bias.any() for m in linears)
    norms = [m for m in decoder.modules() if isinstance(m, nn.LayerNorm)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)


def test_attention_matches_torch_multi_head_attention():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4).eval()
    q, kv = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    expected, _ = F.multi_head_attention_forward(
        q.transpose(0, 1),
        kv.transpose(0, 1),
        kv.transpose(0, 1),
        16,
        4,
        in_proj_weight=None,
        in_proj_bias=torch.zeros(48),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=attn.proj.weight,
        out_proj_bias=attn.proj.bias,
        training=False,
        need_weights=False,
        use_separate_proj_weight=True,
        q_proj_weight=attn.q_proj.weight,
        k_proj_weight=attn.k_proj.weight,
        v_proj_weight=attn.v_proj.weight,
    )
    torch.testing.assert_close(attn(q, kv, kv), expected.transpose(0, 1), rtol=1e-5, atol=1e-6)


def test_layer_is_pre_norm_self_then_cross_attention_then_mlp():
    torch.manual_seed(0)
    layer = ContextDecoderLayer(16, 4, dropout=0.1).eval()
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 9, 16)
    y = layer.norm1(x)
    h = x + layer.self_attn(y, y, y)
    h = h + layer.cross_attn(layer.norm2(h), memory, memory)
    expected = h + layer.mlp(layer.norm3(h))
    torch.testing.assert_close(layer(x, memory), expected)
    layer.train()
    torch.manual_seed(1)
    assert not torch.allclose(layer(x, memory), layer(x, memory))  # dropout is active
    decoder = ContextDecoder(16, width=8, heads=2, layers=2).eval()
    text = torch.randn(2, 3, 16)
    manual = decoder.text_proj(text)
    mem = decoder.memory_proj(memory)
    for block in decoder.decoder:
        manual = block(manual, mem)
    torch.testing.assert_close(decoder(text, memory), decoder.out_proj(manual))
