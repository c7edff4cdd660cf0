"""``ovseg predict VIDEO --video`` and ``ovseg eval --video DATA.json``: the video commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ovseg.errors import ConfigError, OVSegError

VIDEO_TASKS = {"referring": "video_referring", "instance": "video_instance"}


def _video_settings(args: argparse.Namespace) -> dict:
    settings = {}
    for key in ("propagation", "redetect_every", "match_threshold", "matching", "patience"):
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if getattr(args, "max_frames", None) is not None:
        settings["max_frames"] = args.max_frames
    return settings


def check_video_arguments(args: argparse.Namespace) -> None:
    if args.task not in VIDEO_TASKS:
        raise OVSegError(
            "--video runs --task referring (with --prompt) or --task instance (with --vocab); "
            f"not --task {args.task}."
        )
    if args.vocab_free or args.export:
        raise OVSegError("--video does not take --vocab-free or --export.")
    if args.start_frame < 0 or (args.end_frame is not None and args.end_frame <= args.start_frame):
        raise OVSegError("--start-frame must be >= 0 and --end-frame larger than it.")
    if args.frame_step < 1:
        raise OVSegError(f"--frame-step must be >= 1, got {args.frame_step}.")


def predict_video(args: argparse.Namespace, source: Path, out_dir: Path, vocabulary, overrides):
    """Track the prompt / vocabulary through one video or frame folder; returns the exit code."""
    from tqdm import tqdm

    from ovseg.api import DEFAULT_PRESET, create_pipeline
    from ovseg.config import save_resolved_config
    from ovseg.video_outputs import VideoOutputWriter

    stem = source.stem if source.is_file() else source.name
    tracks = out_dir / f"{stem}_tracks.json"
    if tracks.exists() and not args.overwrite:
        raise ConfigError(
            f"{tracks} exists (an earlier run); pass --overwrite to replace its results, or "
            "choose another --out."
        )
    pipeline = create_pipeline(
        args.preset or DEFAULT_PRESET,
        vocabulary,
        task=VIDEO_TASKS[args.task],
        overrides=overrides,
        device=args.device,
        **_video_settings(args),
    )
    query = args.prompt if args.task == "referring" else None
    run = pipeline.track(
        source,
        query,
        start=args.start_frame,
        stop=args.end_frame,
        step=args.frame_step,
        fps=args.fps,
    )
    save_resolved_config(pipeline.config, out_dir / "config.yaml")
    seen: set[int] = set()
    with VideoOutputWriter(out_dir, stem, run, overlay=not args.no_overlay) as writer:
        for result in tqdm(run, total=run.num_frames, desc="video", disable=args.quiet):
            writer.add(result)
            seen.update(int(t) for t in result.track_ids)
    if not args.quiet:
        frames = len(writer.recorder.frames)
        print(f"{source.name}: {frames} frame(s), {len(seen)} track(s)")
        for key, path in writer.paths.items():
            print(f"  {key}: {path}")
    return 0


def evaluate_video_command(args: argparse.Namespace, overrides) -> int:
    """``ovseg eval --video DATA.json --task instance|referring --preset P``."""
    from ovseg.api import DEFAULT_PRESET, create_pipeline
    from ovseg.evaluation.video_loop import evaluate_video
    from ovseg.fileio import atomic_write_json

    task = args.task or "instance"
    if task not in VIDEO_TASKS:
        raise OVSegError(f"--video evaluates --task instance or referring, not {task}.")
    pipeline = create_pipeline(
        args.preset or DEFAULT_PRESET,
        task=VIDEO_TASKS[task],
        overrides=overrides,
        device=args.device,
        **_video_settings(args),
    )
    metrics = evaluate_video(
        pipeline,
        args.video,
        args.frames,
        limit=args.limit,
        progress=not args.quiet,
        class_agnostic=args.class_agnostic,
    )
    text = json.dumps(metrics, indent=2)
    if args.work_dir:
        atomic_write_json(Path(args.work_dir) / "video_results.json", metrics, indent=2)
    print(text, file=sys.stdout)
    return 0
