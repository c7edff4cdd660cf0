"""Peak memory of ``ovseg predict`` against the input's size (photos of 1 to 48 megapixels).

Each size runs ``python -m ovseg.cli predict PHOTO --out DIR [--preset P] [--task T]`` in a
fresh process and reads that process's peak resident set size (``ru_maxrss`` of the finished
child), so import, model loading, decoding, inference and writing the outputs all count. The
photos are JPEGs written by this script: a synthetic scene (the example scene, tiled and
resized) with noise, so the decoder and the model see real image statistics.

Usage::

    python tools/benchmark_memory.py                          # 1, 4, 12, 48 MP, the default preset
    python tools/benchmark_memory.py --sizes 12 --task instance --out work_dirs/memory.json

Prints one line per size and a JSON summary with the peak RSS (MiB), the seconds, and the
memory per extra megapixel (least-squares slope over the sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "demo" / "examples" / "shapes_scene.jpg"


def write_photo(path: Path, megapixels: float, seed: int = 0) -> tuple[int, int]:
    """A 4:3 JPEG of about ``megapixels`` MP; returns ``(height, width)``."""
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(width * 3 / 4))
    scene = Image.open(SCENE).convert("RGB").resize((width, height), Image.BILINEAR)
    pixels = np.asarray(scene, dtype=np.int16)
    rng = np.random.default_rng(seed)
    for row in range(0, height, 1024):  # in bands, so this script stays small too
        band = pixels[row : row + 1024]
        band += rng.integers(-12, 13, size=band.shape, dtype=np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    return height, width


def peak_rss_of(command: list[str]) -> tuple[float, float, int]:
    """Run ``command``; returns (peak RSS MiB of that child, seconds, exit code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode:
        sys.stderr.write(done.stderr[-2000:])
    if peak <= before:  # ru_maxrss is the max over children: a smaller child cannot raise it
        raise RuntimeError("run the sizes in increasing order, one per fresh benchmark process")
    return peak / 1024.0, seconds, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,12,48", help="megapixels, increasing")
    parser.add_argument("--preset", help="preset (default: ovseg's default)")
    parser.add_argument("--task", default="semantic")
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args(argv)
    sizes = [float(v) for v in args.sizes.split(",")]
    if sizes != sorted(sizes):
        parser.error("--sizes must increase (peak RSS of children only grows)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ovseg-memory-") as folder:
        for megapixels in sizes:
            photo = Path(folder) / f"photo_{megapixels:g}mp.jpg"
            height, width = write_photo(photo, megapixels)
            command = [sys.executable, "-m", "ovseg.cli", "predict", str(photo), "--quiet"]
            command += ["--out", str(Path(folder) / f"out_{megapixels:g}")]
            command += ["--task", args.task] + (["--preset", args.preset] if args.preset else [])
            if args.task == "referring":
                command += ["--prompt", "red star"]
            peak, seconds, code = peak_rss_of(command)
            rows.append(
                {
                    "megapixels": round(height * width / 1e6, 2),
                    "size": [height, width],
                    "peak_rss_mib": round(peak, 1),
                    "seconds": round(seconds, 1),
                    "exit_code": code,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            photo.unlink()
    x = np.array([r["megapixels"] for r in rows])
    y = np.array([r["peak_rss_mib"] for r in rows])
    slope = float(np.polyfit(x, y, 1)[0]) if len(rows) > 1 else None
    summary = {
        "command": " ".join(["python", "tools/benchmark_memory.py", *(argv or sys.argv[1:])]),
        "preset": args.preset or "default",
        "task": args.task,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "runs": rows,
        "mib_per_extra_megapixel": None if slope is None else round(slope, 1),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
