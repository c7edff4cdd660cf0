"""Benchmark results for humans (markdown) and machines (JSON, written atomically)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ovseg.fileio import atomic_write_text


def format_markdown(result: dict[str, Any]) -> str:
    """A markdown report of :func:`run_benchmark`'s result: the table, the check, the machine."""
    settings, machine, check = result["settings"], result["machine"], result["check"]

    def memory(part: dict[str, Any]) -> str:
        text = "n/a" if part.get("peak_rss_mb") is None else f"{part['peak_rss_mb']:.0f}"
        if part.get("peak_cuda_mb") is not None:
            text += f" (CUDA {part['peak_cuda_mb']:.0f})"
        return text

    lines = [
        f"### {settings['model_name']} ({settings['dense_mode']}), {settings['num_images']} images "
        f"({', '.join(sorted(set(settings['sizes'])))}), short side {settings['short_side']}, "
        f"windows {settings['crop']} / stride {settings['stride']} "
        f"({settings['windows_total']} in all), {settings['num_classes']} classes",
        "",
        "| pipeline | images/s | median s (all images) | runs (s) | peak RSS MiB |",
        "|---|---:|---:|---|---:|",
    ]
    for key, label in (
        ("baseline", "naive baseline (one window at a time, batch 1, fp32)"),
        ("ovseg", f"ovseg predict_batch (batch {settings['batch_size']}, {settings['precision']})"),
    ):
        part = result[key]
        runs = ", ".join(f"{t:.3f}" for t in part["seconds_all"])
        lines.append(
            f"| {label} | {part['images_per_second']:.3f} | {part['seconds_median']:.3f} | "
            f"{runs} | {memory(part)} |"
        )
    lines += [
        "",
        f"**ovseg / baseline: {result['speedup']:.2f}x** images/s "
        f"({result.get('cpu_time_speedup', float('nan')):.2f}x in CPU seconds of the process).",
        "",
        f"Check: max |score difference| {check['max_abs_score_diff']:.2e} (cosine); labels "
        + (
            "identical on every pixel."
            if check["labels_equal"]
            else f"differ on {check['mismatched_pixels']} of {check['total_pixels']} pixels, "
            + (
                "all float ties."
                if settings["precision"] == "fp32"
                else f"agreement {100 * check['label_agreement']:.2f}% "
                f"({settings['precision']} against fp32)."
            )
        ),
        "Peak RSS is the process peak after the baseline warm-up (baseline row) and after the "
        "ovseg warm-up (ovseg row; it includes the baseline's peak).",
        "",
        f"Machine: {machine['cpu']}, {machine['cpu_usable']} usable of {machine['cpu_count']} "
        f"CPUs, torch {machine['torch']} (threads: {machine['torch_threads']}), open_clip "
        f"{machine['open_clip']}, device {machine['device']}"
        + (f" ({machine['gpu']})" if machine.get("gpu") else "")
        + ".",
    ]
    if result.get("command"):
        lines.append(f"Command: `{result['command']}`")
    return "\n".join(lines) + "\n"


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (temporary name, then rename)."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")
