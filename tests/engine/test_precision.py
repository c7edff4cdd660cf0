"""Attention kept in float32 under bf16 autocast, parameters and state-dict keys unchanged."""

from __future__ import annotations

import copy
import pickle

import torch
from torch import nn

from ovseg.engine.precision import keep_attention_fp32, native_cpu_bf16


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.mlp = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended = self.attn(x, x, x, need_weights=False)[0]
        return attended, self.mlp(attended)


def test_attention_runs_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    block = _Block()
    x = torch.randn(2, 5, 16)
    keys = list(block.state_dict())
    with torch.no_grad():
        reference = block.attn(x, x, x, need_weights=False)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert block(x)[0].dtype == torch.bfloat16  # before: autocast reaches the attention
    assert keep_attention_fp32(block) == 1
    assert keep_attention_fp32(block) == 0  # idempotent
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attended, projected = block(x)
    assert attended.dtype == torch.float32 and projected.dtype == torch.bfloat16
    torch.testing.assert_close(attended.detach(), reference, rtol=1e-5, atol=1e-6)
    attended.sum().backward()
    assert block.attn.in_proj_weight.grad is not None
    assert list(block.state_dict()) == keys


def test_patched_model_copies_and_pickles():
    block = _Block()
    keep_attention_fp32(block)
    x = torch.randn(1, 3, 16)
    for other in (copy.deepcopy(block), pickle.loads(pickle.dumps(block))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert other(x)[0].dtype == torch.float32


def test_native_cpu_bf16_is_a_bool():
    assert isinstance(native_cpu_bf16(), bool)
