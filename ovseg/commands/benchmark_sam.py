"""``tools/benchmark_sam.py``: automatic SAM proposals against segment-anything's generator."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from ovseg.benchmarks.report import write_json
from ovseg.benchmarks.sam import format_markdown, run_proposals_benchmark
from ovseg.errors import OVSegError


def main(argv: Sequence[str] | None = None, prog: str = "tools/benchmark_sam.py") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.splitlines()[0].split(": ", 1)[-1]
    )
    parser.add_argument("--model", default="ovseg-sam-tiny", help="vit_b, vit_l, vit_h or small")
    parser.add_argument("--pretrained", default="shapes", help="weights tag ('none': random)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.5)
    parser.add_argument("--stability-score-thresh", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        result = run_proposals_benchmark(
            args.model,
            None if args.pretrained == "none" else args.pretrained,
            num_images=args.images,
            image_size=args.image_size,
            points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_score_thresh,
            repeats=args.repeats,
            threads=args.threads,
            seed=args.seed,
        )
    except OVSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result["command"] = shlex.join(["python", prog, *(sys.argv[1:] if argv is None else argv)])
    print(format_markdown(result))
    if args.out:
        write_json(args.out, result)
    return 0
