"""``tools/benchmark.py``: the semantic-pipeline throughput benchmark's command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from ovseg.benchmarks.inputs import (
    DEFAULT_SIZES,
    parse_size,
)
from ovseg.benchmarks.report import format_markdown, write_json
from ovseg.benchmarks.runner import run_benchmark
from ovseg.errors import OVSegError


def build_parser(prog: str = "tools/benchmark.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Images per second of ovseg's semantic pipeline against a naive baseline "
        "(the reference forward_slide loop: one window, one image at a time, fp32), measured in "
        "the same run on the same random-init open_clip model; also checks both give the same "
        "labels.",
    )
    parser.add_argument("--model", default="ViT-B-16", help="open_clip ViT architecture")
    parser.add_argument(
        "--mode",
        default="sclip",
        choices=["vanilla", "maskclip", "sclip", "clearclip", "naclip"],
        help="dense mode of the last block",
    )
    parser.add_argument("--images", type=int, default=8, help="number of synthetic images")
    parser.add_argument(
        "--sizes",
        default=",".join(DEFAULT_SIZES),
        help="image sizes HEIGHTxWIDTH, comma separated, used in turn",
    )
    parser.add_argument("--short-side", type=int, default=336)
    parser.add_argument("--max-long-side", type=int, default=2048)
    parser.add_argument("--crop", type=int, default=224, help="window size (pixels)")
    parser.add_argument("--stride", type=int, default=112, help="window stride (pixels)")
    parser.add_argument("--batch-size", type=int, default=16, help="ovseg windows per batch")
    parser.add_argument("--classes", type=int, default=21, help="vocabulary size")
    parser.add_argument(
        "--templates",
        default="photo",
        help="prompt template set (text features are computed before the timing, so this only "
        "changes the set-up time; imagenet80 is CLIP's 80 templates)",
    )
    parser.add_argument("--logit-scale", type=float, default=40.0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (CUDA must exist)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and images")
    parser.add_argument(
        "--score-tol", type=float, default=1e-4, help="largest allowed cosine score difference"
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="ovseg's backbone precision (the baseline stays fp32; labels are then compared, "
        "not required to match)",
    )
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "tools/benchmark.py") -> int:
    """Run the benchmark from the command line; prints a markdown table, writes ``--out``."""
    args = build_parser(prog).parse_args(argv)
    shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", prog, *shown])

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[benchmark] {message}", file=sys.stderr, flush=True)

    try:
        result = run_benchmark(
            args.model,
            args.mode,
            num_images=args.images,
            sizes=[parse_size(part) for part in args.sizes.split(",") if part.strip()],
            short_side=args.short_side,
            max_long_side=args.max_long_side,
            crop=args.crop,
            stride=args.stride,
            batch_size=args.batch_size,
            num_classes=args.classes,
            templates=args.templates,
            logit_scale=args.logit_scale,
            device=args.device,
            repeats=args.repeats,
            warmup=args.warmup,
            seed=args.seed,
            threads=args.threads,
            score_tol=args.score_tol,
            precision=args.precision,
            log=log,
        )
    except OVSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result["command"] = command
    print(format_markdown(result))
    if args.out:
        write_json(args.out, result)
        log(f"wrote {args.out}")
    return 0
