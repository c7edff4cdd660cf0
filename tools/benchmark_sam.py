#!/usr/bin/env python
"""Seconds per image of ovseg's automatic SAM proposals against segment-anything's generator.

    python tools/benchmark_sam.py --threads 2 --out bench_sam.json

The logic lives in :mod:`ovseg.benchmarks.sam`.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import ovseg  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovseg.commands.benchmark_sam import main

if __name__ == "__main__":
    sys.exit(main())
