"""Mixed precision on the CPU: whether it has native bf16, and attention kept in float32.

On CPUs with AVX512-BF16 (or AMX) bf16 matrix products run 2.5-4x faster than float32 ones, but
PyTorch's CPU flash-attention backward in bf16 is several times slower than in float32, which
cancels the gain on small transformers. :func:`keep_attention_fp32` makes every
``nn.MultiheadAttention`` of a model run in float32 under autocast (its inputs cast up, autocast
off inside), so only the MLPs, convolutions and other projections run in bf16.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: attribute marking an ``nn.MultiheadAttention`` whose forward already runs in float32
_FP32_MARK = "_ovseg_fp32_attention"


def native_cpu_bf16() -> bool:
    """True when this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _to_fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


class _Fp32Forward:
    """``nn.MultiheadAttention.forward`` with float32 inputs and autocast off (picklable)."""

    def __init__(self, module: nn.MultiheadAttention) -> None:
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        device_type = "cuda" if args and getattr(args[0], "is_cuda", False) else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            args = tuple(_to_fp32(a) for a in args)
            kwargs = {k: _to_fp32(v) for k, v in kwargs.items()}
            return nn.MultiheadAttention.forward(self.module, *args, **kwargs)


def keep_attention_fp32(model: nn.Module) -> int:
    """Make every ``nn.MultiheadAttention`` in ``model`` compute in float32 under autocast.

    The modules keep their parameters and state-dict keys; only their ``forward`` changes.
    Returns how many modules were changed (calling it again changes none).
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) and not getattr(module, _FP32_MARK, False):
            module.forward = _Fp32Forward(module)
            setattr(module, _FP32_MARK, True)
            changed += 1
    return changed
