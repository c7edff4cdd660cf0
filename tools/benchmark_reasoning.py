#!/usr/bin/env python
"""Seconds per question of a reasoning pipeline (READ) on one image, model loading excluded.

    python tools/benchmark_reasoning.py                      # shapes-tiny's embedded READ, CPU
    python tools/benchmark_reasoning.py --preset shapes-tiny --repeats 5 --threads 1

Each repeat sets the image afresh (so SAM's image encoder runs) and asks the question once:
``first`` is a whole query on a new image (CLIP + SAM encoders, greedy answer, SAM's decoder),
``again`` the same question on the already encoded image. Prints the medians as JSON, with the
answer and the load average of the machine while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

try:
    import ovseg  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEMO = Path(__file__).resolve().parents[1] / "demo" / "examples" / "shapes_scene.jpg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes-tiny")
    parser.add_argument("--image", type=Path, default=DEMO)
    parser.add_argument("--question", default="What is the shape above the red star in this "
                        "image? Please respond with segmentation mask.")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        print("error: --repeats must be at least 1", file=sys.stderr)
        return 2
    if not args.image.is_file():
        print(f"error: no image at {args.image}; give one with --image", file=sys.stderr)
        return 2
    import numpy as np
    import torch
    from PIL import Image

    import ovseg

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    image = np.asarray(Image.open(args.image).convert("RGB"))
    pipeline = ovseg.create_pipeline(args.preset, task="reasoning")
    pipeline.set_image(image)
    pipeline.predict(args.question)  # warm-up (lazy initialisation, allocator)
    first, again = [], []
    answer = ""
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        start = time.perf_counter()
        pipeline.set_image(image)
        answer = pipeline.predict(args.question).answer
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        pipeline.predict(args.question)
        again.append(time.perf_counter() - start)
    report = {
        "preset": args.preset,
        "image_size": list(image.shape[:2]),
        "threads": torch.get_num_threads(),
        "query_s": round(statistics.median(first), 4),
        "query_encoded_image_s": round(statistics.median(again), 4),
        "repeats": args.repeats,
        "answer": answer,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
