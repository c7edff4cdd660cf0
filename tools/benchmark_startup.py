"""Start-up time of ``import ovseg`` and the light commands against a bare ``import torch``.

Each command runs in a fresh interpreter, ``--repeats`` times after one warm-up run (so the file
cache is warm), and the median wall time is printed as a Markdown table::

    python tools/benchmark_startup.py                    # this checkout
    python tools/benchmark_startup.py --root OTHER_DIR   # another checkout, e.g. an older commit
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (
    ("python -c pass", ["-c", "pass"]),
    ('python -c "import torch"', ["-c", "import torch"]),
    ('python -c "import ovseg"', ["-c", "import ovseg"]),
    ("ovseg --help", ["-m", "ovseg.cli", "--help"]),
    ("ovseg list", ["-m", "ovseg.cli", "list"]),
    ("ovseg config shapes-tiny", ["-m", "ovseg.cli", "config", "shapes-tiny"]),
    ("ovseg predict IMG --device gpu (error)", ["-m", "ovseg.cli", "predict", "{image}", "--vocab",
                                                "a", "--device", "gpu"]),
)  # fmt: skip


def time_command(args: list[str], env: dict[str, str], cwd: str, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` runs of ``python ARGS`` (after one untimed warm-up run)."""
    times = []
    for run in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if run:
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(args.root).resolve()),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    with tempfile.TemporaryDirectory() as cwd:
        image = Path(cwd) / "img.png"
        image.write_bytes(b"")  # the device check comes before the image is read
        medians = {}
        for label, command in COMMANDS:
            command = [str(image) if part == "{image}" else part for part in command]
            medians[label] = statistics.median(time_command(command, env, cwd, args.repeats))
    import torch

    base = medians['python -c "import torch"']
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}; median of {args.repeats} runs"
    )
    print("\n| command | median s | / import torch |\n| --- | ---: | ---: |")
    for label, seconds in medians.items():
        print(f"| `{label}` | {seconds:.2f} | {seconds / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
