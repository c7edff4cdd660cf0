"""Numeric precision of a model's forward passes: ``fp32``, ``bf16`` or ``fp16``.

Two ways are used. :class:`~ovseg.models.backbones.clip.ClipBackbone` casts its weights (its
activations follow). The SAM family keeps float32 weights and runs under
:func:`torch.autocast`, which picks per operation: matrix products and convolutions in the
low precision, normalisations and reductions in float32. Outputs are float32 either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch

from ovseg.errors import ConfigError

__all__ = ["PRECISIONS", "autocast_for", "compile_options", "dtype_for"]

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def dtype_for(precision: str) -> torch.dtype:
    """``fp32`` / ``bf16`` / ``fp16`` -> the torch dtype.

    Raises:
        ConfigError: another name.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    return PRECISIONS[precision]


def autocast_for(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` in ``dtype``; nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def compile_options(value: Any) -> dict[str, Any] | None:
    """The ``compile`` setting -> keyword arguments of :func:`torch.compile` (None: off).

    ``false`` / ``null``: off; ``true``: torch's defaults; a mapping: its keys (``mode``,
    ``backend``, ``dynamic``, ``fullgraph``, ``options``).

    Raises:
        ConfigError: anything else, or unknown keys.
    """
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, Mapping):
        allowed = {"mode", "backend", "dynamic", "fullgraph", "options"}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ConfigError(
                f"compile takes {', '.join(sorted(allowed))}; unknown: {', '.join(unknown)}."
            )
        return dict(value)
    raise ConfigError(
        f"compile must be true, false or a mapping of torch.compile options, got {value!r}."
    )
