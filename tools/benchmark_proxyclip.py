"""Per-window cost of ProxyCLIP's dense tokens against SCLIP's, on random-init weights.

Both encode the same batch of CLIP-normalised windows with CLIP ViT-B/16: SCLIP with its
modified last block (``ClipBackbone`` ``dense_mode: sclip``), ProxyCLIP with a proxy model
(DINO ViT-B/16 by default) plus its proxy attention (``ProxyClipBackbone``). Weights are random
(no download); the cost of a forward pass does not depend on the weight values.

    python tools/benchmark_proxyclip.py --threads 2 --window 336 --windows 4 --repeats 5
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", default="ViT-B-16", help="open_clip architecture")
    parser.add_argument("--proxy", default="dino_vitb16", help="ProxyCLIP proxy_model name")
    parser.add_argument("--window", type=int, default=336, help="window side in pixels")
    parser.add_argument("--windows", type=int, default=4, help="windows per backbone call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    logging.getLogger("ovseg").setLevel(logging.ERROR)  # the random-weights warnings
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.windows, 3, args.window, args.window)
    sclip = ClipBackbone(args.clip, dense_mode="sclip")
    proxy = ProxyClipBackbone(args.clip, proxy_model=args.proxy, random_proxy=True)
    times = _time_interleaved(
        {"sclip": sclip.encode_dense, "proxyclip": proxy.encode_dense,
         "proxy_model": proxy.proxy_features},
        images,
        args.repeats,
    )  # fmt: skip
    t_sclip = times["sclip"] / args.windows
    t_proxy = times["proxyclip"] / args.windows
    proxy_only = times["proxy_model"] / args.windows
    result = {
        "clip": args.clip,
        "proxy": args.proxy,
        "window": args.window,
        "windows_per_call": args.windows,
        "threads": args.threads,
        "sclip_s_per_window": round(t_sclip, 4),
        "proxyclip_s_per_window": round(t_proxy, 4),
        "proxy_model_s_per_window": round(proxy_only, 4),
        "ratio": round(t_proxy / t_sclip, 2),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        from ovseg.fileio import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
