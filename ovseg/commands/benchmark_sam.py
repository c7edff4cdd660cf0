"""``tools/benchmark_sam.py``: SAM image encoder, proposals, referring and instance pipelines
against segment-anything's SamPredictor / SamAutomaticMaskGenerator, in one run."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from ovseg.benchmarks.inputs import parse_size
from ovseg.benchmarks.report import write_json
from ovseg.benchmarks.sam_pipelines import SECTIONS, format_markdown, run_sam_benchmark
from ovseg.errors import OVSegError


def build_parser(prog: str = "tools/benchmark_sam.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Seconds of ovseg's SAM image encoder, automatic proposals, referring and "
        "instance pipelines against segment-anything's SamPredictor / "
        "SamAutomaticMaskGenerator on the same weights and images, with their agreement.",
    )
    parser.add_argument("--model", default="ovseg-sam-tiny", help="vit_b, vit_l, vit_h or small")
    parser.add_argument("--pretrained", default="shapes", help="weights tag ('none': random)")
    parser.add_argument(
        "--clip-model", default=None, help="open_clip ViT for the pipelines, random init "
        "(default: the shapes-tiny preset's packaged CLIP)",
    )  # fmt: skip
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma separated: " + ", ".join(SECTIONS)
    )
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=128, help="side of the shape scenes")
    parser.add_argument(
        "--sizes", default=None, help="HEIGHTxWIDTH,... : synthetic photos of these sizes instead"
    )
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.5)
    parser.add_argument("--stability-score-thresh", type=float, default=0.2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--image-batch-size", type=int, default=2, help="images per encoder call")
    parser.add_argument("--compile", action="store_true", help="torch.compile the image encoder")
    parser.add_argument(
        "--attention", default="native", choices=["native", "sdpa"],
        help="SAM image-encoder attention: native (segment-anything's) or sdpa (fused)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "tools/benchmark_sam.py") -> int:
    """Run the SAM benchmarks; prints a markdown table, writes ``--out``."""
    args = build_parser(prog).parse_args(argv)

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[benchmark_sam] {message}", file=sys.stderr, flush=True)

    try:
        result = run_sam_benchmark(
            args.model,
            None if args.pretrained == "none" else args.pretrained,
            clip_model=args.clip_model,
            sections=[part.strip() for part in args.sections.split(",") if part.strip()],
            num_images=args.images,
            image_size=args.image_size,
            sizes=[parse_size(s) for s in args.sizes.split(",")] if args.sizes else None,
            points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_score_thresh,
            device=args.device,
            precision=args.precision,
            image_batch_size=args.image_batch_size,
            compile_encoder=args.compile,
            attention=args.attention,
            repeats=args.repeats,
            warmup=args.warmup,
            threads=args.threads,
            seed=args.seed,
            log=log,
        )
    except OVSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result["command"] = shlex.join(["python", prog, *(sys.argv[1:] if argv is None else argv)])
    print(format_markdown(result))
    if args.out:
        write_json(args.out, result)
        log(f"wrote {args.out}")
    return 0
