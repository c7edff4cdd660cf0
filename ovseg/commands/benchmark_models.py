"""``tools/benchmark_models.py``: seconds per query of a READ-7B-shaped model and per image of
OWLv2-B/16 boxes segmented by SAM ViT-H, with random weights (speed only)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence

from ovseg.benchmarks.inputs import parse_size
from ovseg.benchmarks.report import write_json
from ovseg.errors import OVSegError


def build_parser(prog: str = "tools/benchmark_models.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Speed of large models with random weights: 'read' times one reasoning "
        "query of a READ-7B-shaped model, 'detect' OWLv2 boxes segmented by SAM per image.",
    )
    sub = parser.add_subparsers(dest="which", required=True)
    read = sub.add_parser("read", help="READ (LLaMA-7B + CLIP ViT-L/14-336 + SAM ViT-H)")
    read.add_argument("--size", default="7b", choices=["7b", "tiny"])
    read.add_argument("--prompt-tokens", type=int, default=64, help="text tokens of the prompt")
    read.add_argument(
        "--answer-tokens", type=int, default=16, help="answer length, [SEG] and EOS included"
    )
    read.add_argument("--image-size", default="480x640", help="HEIGHTxWIDTH of the image")
    detect = sub.add_parser("detect", help="OWLv2-B/16 boxes -> SAM ViT-H masks")
    detect.add_argument("--size", default="b16", choices=["b16", "tiny"])
    detect.add_argument("--images", type=int, default=8)
    detect.add_argument("--sizes", default="480x640", help="HEIGHTxWIDTH,... of the images")
    detect.add_argument("--classes", type=int, default=8, help="vocabulary size")
    detect.add_argument("--boxes", type=int, default=10, help="boxes (SAM prompts) per image")
    detect.add_argument(
        "--attention", default="native", choices=["native", "sdpa"],
        help="SAM image-encoder attention: native (segment-anything's) or sdpa (fused)",
    )  # fmt: skip
    for each in (read, detect):
        each.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
        each.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
        each.add_argument("--repeats", type=int, default=5 if each is read else 3)
        each.add_argument("--warmup", type=int, default=1)
        each.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        each.add_argument("--seed", type=int, default=0)
        each.add_argument("--out", default=None, help="write the result as JSON here")
        each.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "tools/benchmark_models.py") -> int:
    """Run one of the two benchmarks; prints a JSON summary, writes ``--out``."""
    args = build_parser(prog).parse_args(argv)

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[benchmark_models {args.which}] {message}", file=sys.stderr, flush=True)

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        if args.which == "read":
            from ovseg.benchmarks.read_query import run_read_query_benchmark

            result = run_read_query_benchmark(
                args.size,
                device=args.device,
                precision=args.precision,
                prompt_tokens=args.prompt_tokens,
                answer_tokens=args.answer_tokens,
                image_size=parse_size(args.image_size),
                repeats=args.repeats,
                warmup=args.warmup,
                seed=args.seed,
                log=log,
            )
            headline = {"seconds_per_query": result["seconds_median"]}
        else:
            from ovseg.benchmarks.detect_segment import run_detect_segment_benchmark

            result = run_detect_segment_benchmark(
                args.size,
                device=args.device,
                precision=args.precision,
                num_images=args.images,
                sizes=tuple(parse_size(s) for s in args.sizes.split(",") if s.strip()),
                num_classes=args.classes,
                boxes_per_image=args.boxes,
                attention=args.attention,
                repeats=args.repeats,
                warmup=args.warmup,
                seed=args.seed,
                log=log,
            )
            headline = {name: stage["ms_per_image"] for name, stage in result["stages"].items()}
    except OVSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result["command"] = shlex.join(["python", prog, *(sys.argv[1:] if argv is None else argv)])
    print(json.dumps({"benchmark": args.which, **headline}, indent=2))
    if args.out:
        write_json(args.out, result)
        log(f"wrote {args.out}")
    return 0
