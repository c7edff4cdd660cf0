#!/usr/bin/env python
"""Images per second of ovseg's semantic pipeline against a naive reference-style baseline.

    python tools/benchmark.py --model ViT-B-16 --mode sclip --images 8 --short-side 336 \
        --crop 224 --stride 112 --batch-size 16 --classes 21 --device cpu --out bench.json

Quick run on the packaged tiny architecture:

    python tools/benchmark.py --model ovseg-ViT-Ti-8 --short-side 128 --crop 64 --stride 32

The logic lives in :mod:`ovseg.benchmarks`, the command in :mod:`ovseg.commands.benchmark`.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import ovseg  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovseg.commands.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
