"""Per-window cost of ProxyCLIP's and SC-CLIP's dense tokens against SCLIP's, random weights.

All encode the same batch of CLIP-normalised windows with the same CLIP (ViT-B/16 by default):
SCLIP with its modified last block (``ClipBackbone`` ``dense_mode: sclip``), ProxyCLIP with a
proxy model (DINO ViT-B/16 by default) plus its proxy attention (``ProxyClipBackbone``), SC-CLIP
with its self-calibration (``ScClipBackbone``, the block settings of its ViT-B/16 or ViT-L/14
preset). Weights are random (no download); the cost of a forward pass does not depend on the
weight values.

    python tools/benchmark_proxyclip.py --threads 2 --window 336 --windows 4 --repeats 5
    python tools/benchmark_proxyclip.py --methods scclip --window 224
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovseg.models.backbones.clip import ClipBackbone  # noqa: E402
from ovseg.models.backbones.proxyclip import ProxyClipBackbone  # noqa: E402
from ovseg.models.backbones.scclip import ScClipBackbone  # noqa: E402

METHODS = ("proxyclip", "scclip")
# the block settings of the scclip-vitb16 / scclip-vitl14 presets
SCCLIP_BLOCKS = {
    "ViT-B-16": dict(pre_adjust_idx=8, post_adjust_idx=3, multi_start_idx=3, multi_end_idx=10,
                     res_cls=0.3),
    "ViT-L-14": dict(pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8, multi_end_idx=19,
                     res_cls=0.1),
}  # fmt: skip


def _time_interleaved(fns: dict, images: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds of each ``fn(images)``, the functions taking turns in every repeat.

    Taking turns spreads the load of a shared machine evenly over the contenders; each one
    runs once first as a warm-up.
    """
    runs: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn(images)
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(images)
                runs[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in runs.items()}


def _contenders(args: argparse.Namespace) -> dict:
    """Name -> function of the windows; SCLIP (the baseline) first."""
    fns = {"sclip": ClipBackbone(args.clip, dense_mode="sclip").encode_dense}
    if "proxyclip" in args.methods:
        proxy = ProxyClipBackbone(args.clip, proxy_model=args.proxy, random_proxy=True)
        fns["proxyclip"] = proxy.encode_dense
        fns["proxy_model"] = proxy.proxy_features
    if "scclip" in args.methods:
        if args.clip not in SCCLIP_BLOCKS:
            raise SystemExit(f"--clip: SC-CLIP block settings are known for {list(SCCLIP_BLOCKS)}")
        fns["scclip"] = ScClipBackbone(args.clip, **SCCLIP_BLOCKS[args.clip]).encode_dense
    return fns


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", default="ViT-B-16", help="open_clip architecture")
    parser.add_argument("--proxy", default="dino_vitb16", help="ProxyCLIP proxy_model name")
    parser.add_argument(
        "--methods", default="proxyclip", help=f"comma-separated, of {', '.join(METHODS)}"
    )
    parser.add_argument("--window", type=int, default=336, help="window side in pixels")
    parser.add_argument("--windows", type=int, default=4, help="windows per backbone call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or not args.methods:
        parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")

    logging.getLogger("ovseg").setLevel(logging.ERROR)  # the random-weights warnings
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.windows, 3, args.window, args.window)
    times = _time_interleaved(_contenders(args), images, args.repeats)
    per_window = {name: t / args.windows for name, t in times.items()}
    result = {
        "clip": args.clip,
        "window": args.window,
        "windows_per_call": args.windows,
        "threads": args.threads,
        "sclip_s_per_window": round(per_window["sclip"], 4),
    }
    if "proxyclip" in per_window:
        result["proxy"] = args.proxy
        result["proxyclip_s_per_window"] = round(per_window["proxyclip"], 4)
        result["proxy_model_s_per_window"] = round(per_window["proxy_model"], 4)
        result["ratio"] = round(per_window["proxyclip"] / per_window["sclip"], 2)
    if "scclip" in per_window:
        result["scclip_s_per_window"] = round(per_window["scclip"], 4)
        result["scclip_ratio"] = round(per_window["scclip"] / per_window["sclip"], 2)
    result["torch"] = torch.__version__
    result["machine"] = platform.processor() or platform.machine()
    print(json.dumps(result, indent=2))
    if args.out is not None:
        from ovseg.fileio import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
