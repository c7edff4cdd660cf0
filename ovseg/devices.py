"""Checking a ``--device`` name before anything is built.

Only a device other than the CPU imports torch (to ask whether it exists), so that argument
errors answer at once.
"""

from __future__ import annotations

import re

from ovseg.errors import ConfigError

__all__ = ["DEVICE_TYPES", "check_device"]

#: the device types ``torch.device`` parses (c10's list; tests check it against torch), so a
#: misspelt --device is refused without importing torch
DEVICE_TYPES = frozenset(
    {
        "cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga",
        "maia", "xla", "lazy", "vulkan", "mps", "meta", "hpu", "mtia", "privateuseone",
    }
)  # fmt: skip
_DEVICE_NAME = re.compile(r"([a-z]+)(?::(?:0|[1-9][0-9]*))?")


def check_device(device: str | None) -> None:
    """Refuse an unknown device name, or a GPU this machine does not have, before building.

    Only a device other than the CPU imports torch (to ask whether it exists).
    """
    if device is None:
        return
    name = _DEVICE_NAME.fullmatch(device)
    if name is None or name.group(1) not in DEVICE_TYPES:
        raise ConfigError(
            f"--device {device!r} is not a device name; use cpu, cuda, cuda:1 or mps."
        )
    if name.group(1) == "cpu":
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"--device {device!r} is not a device name; use cpu, cuda, cuda:1 or mps."
        ) from exc
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"--device {device}: this machine has no usable CUDA GPU (torch "
                f"{torch.__version__}); run with --device cpu."
            )
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(
                f"--device {device}: this machine has {count} CUDA GPU(s) (cuda:0 to "
                f"cuda:{count - 1})."
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available here; use --device cpu.")
