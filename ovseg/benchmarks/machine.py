"""The machine a benchmark ran on: CPU, GPU, library versions, peak memory."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import open_clip
import torch


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (None where unavailable)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model and cores, torch version and threads, the device (and its name on CUDA)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": getattr(open_clip, "__version__", "unknown"),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def benchmark_device(name: str) -> torch.device:
    """``--device`` as a torch device; a CUDA device this machine lacks is a clear error.

    Raises:
        ConfigError: not a device name, or CUDA (or that GPU index) is not available here.
    """
    from ovseg.devices import check_device
    from ovseg.errors import ConfigError

    check_device(name)
    device = torch.device(name)
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: the benchmarks run on cpu or cuda.")
    return device
