#!/usr/bin/env python
"""Speed of a READ-7B-shaped model per query and of OWLv2-B/16 + SAM ViT-H per image (random weights).

    python tools/benchmark_models.py read --device cuda --out read.json
    python tools/benchmark_models.py detect --device cuda --out detect.json

The logic lives in :mod:`ovseg.benchmarks.read_query` and :mod:`ovseg.benchmarks.detect_segment`.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import ovseg  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovseg.commands.benchmark_models import main

if __name__ == "__main__":
    sys.exit(main())
