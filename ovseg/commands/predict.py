"""``ovseg predict``: one image, a folder (sharded under torchrun, a writer thread behind the
model, ``report.json``) or a detectron2 dataset-dicts JSON, for every task; ``--video`` hands
over to :mod:`ovseg.commands.video`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ovseg.commands.common import split_overrides
from ovseg.devices import check_device
from ovseg.errors import ConfigError, OVSegError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
REPORT_NAME = "report.json"


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _collect_images(source: Path, out_dir: Path) -> list[Path]:
    """Image files under ``source`` (recursively, sorted; hidden names and ``out_dir`` skipped)."""
    if source.is_dir():
        out = out_dir.resolve()
        images = []
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if path.suffix.lower() not in IMAGE_SUFFIXES or _is_hidden(relative):
                continue
            if out == path.resolve() or out in path.resolve().parents:
                continue  # results of an earlier run written inside the input folder
            if path.is_file():
                images.append(path)
        if not images:
            raise OVSegError(f"{source} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
        return images
    if not source.exists():
        raise OVSegError(f"{source} does not exist; give an image file or a folder of images.")
    return [source]


def output_stems(relatives: Sequence[Path]) -> dict[Path, Path]:
    """Where each image's outputs go, relative to ``--out``, without the file suffixes.

    ``sub/a.png`` -> ``sub/a`` (outputs ``sub/a_labels.png``, ``sub/a.json`` ...). Images of one
    folder sharing a stem (``scene.jpg``, ``scene.png``; compared case-insensitively, as some
    file systems do) get their extension in the stem instead (``scene_jpg``, ``scene_png``), as
    does a top-level ``report.*`` (``report.json`` is the run's report); a stem still taken after
    that gets ``_2``, ``_3`` ...
    """
    by_key: dict[tuple[Path, str], list[Path]] = {}
    for rel in relatives:
        by_key.setdefault((rel.parent, rel.stem.casefold()), []).append(rel)
    reserved = {(Path("."), Path(REPORT_NAME).stem)}
    stems: dict[Path, Path] = {}
    taken: set[tuple[Path, str]] = set(reserved)
    for rel in sorted(relatives, key=lambda r: (len(by_key[(r.parent, r.stem.casefold())]), r)):
        key = (rel.parent, rel.stem.casefold())
        clash = len(by_key[key]) > 1 or key in reserved
        stem = f"{rel.stem}_{rel.suffix.lstrip('.')}" if clash else rel.stem
        candidate, count = stem, 1
        while (rel.parent, candidate.casefold()) in taken:
            count += 1
            candidate = f"{stem}_{count}"
        taken.add((rel.parent, candidate.casefold()))
        stems[rel] = rel.parent / candidate
    return stems


def _done_before(json_path: Path, source: str) -> bool:
    """True when an earlier run finished this image: its JSON (written last) names ``source``."""
    if not json_path.is_file():
        return False
    try:
        recorded = json.loads(json_path.read_text(encoding="utf-8")).get("source", source)
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == source


def _check_out_dir(out_dir: Path) -> None:
    """Create ``--out`` and prove it writable before any model is loaded."""
    import tempfile

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a folder for the results.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".ovseg-write-test-", dir=out_dir)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"--out {out_dir} cannot be used as the output folder ({reason}). Give a folder "
            "you can write to."
        ) from exc
    os.close(handle)
    os.unlink(probe)


def _vocabulary_from_args(args: argparse.Namespace):
    from ovseg.vocab import Vocabulary

    if args.vocab is not None and args.vocab_file is not None:
        raise OVSegError("Give either --vocab or --vocab-file, not both.")
    if args.vocab is not None:  # an empty --vocab is an error, not "use the preset's classes"
        return Vocabulary.create(args.vocab)
    if args.vocab_file is not None:
        return Vocabulary.from_file(args.vocab_file)
    return None


PROMPTED_TASKS = {"referring": "the phrase to segment", "reasoning": "the question to answer"}


def _check_task_arguments(args: argparse.Namespace) -> None:
    if args.task in PROMPTED_TASKS:
        if not args.prompt or not args.prompt.strip():
            raise OVSegError(f"--task {args.task} needs --prompt '{PROMPTED_TASKS[args.task]}'.")
        if args.vocab is not None or args.vocab_file is not None:
            raise OVSegError(
                f"--task {args.task} answers --prompt; it takes no --vocab/--vocab-file."
            )
    elif args.prompt:
        raise OVSegError(
            f"--prompt goes with --task referring or reasoning; --task {args.task} takes --vocab."
        )


def _infer(pipeline, task: str, image, args: argparse.Namespace):
    """The model's result for one image (decoded array, or what ``pipeline.load_image`` made)."""
    if task in PROMPTED_TASKS:
        return pipeline(image, args.prompt)
    return pipeline(image)


def _labelled_summary(result, nothing: str, shown: int = 10) -> str:
    """``"cat 0.91, dog 0.80 (+3 more)"``: the first ``shown`` labels of a detection or instance
    result with their scores, or ``nothing`` when it found none."""
    found = [
        f"{result.class_names[int(label)]} {score:.2f}"
        for label, score in zip(result.labels[:shown], result.scores[:shown], strict=True)
    ]
    more = f" (+{len(result) - shown} more)" if len(result) > shown else ""
    return (", ".join(found) + more) if found else nothing


def _write_result(
    task: str, result, image, args: argparse.Namespace, out_dir: Path, stem: str, source: str
):
    """Write one image's outputs; returns (files written, one-line summary). Each JSON names
    ``source``."""
    from ovseg.outputs import (
        write_detection_outputs,
        write_instance_outputs,
        write_reasoning_outputs,
        write_referring_outputs,
        write_semantic_outputs,
    )

    options = {"source": source, "side_by_side": bool(getattr(args, "side_by_side", False))}
    if task == "referring":
        written = write_referring_outputs(result, image, out_dir, stem, **options)
        line = (
            f"'{result.phrase}': {100 * result.mask.mean():.1f}% of the image, "
            f"predicted IoU {result.score:.2f}"
        )
        return written, line
    if task == "reasoning":
        written = write_reasoning_outputs(result, image, out_dir, stem, **options)
        return written, f"'{result.answer}' ({len(result)} mask(s))"
    if task == "detection":
        written = write_detection_outputs(result, image, out_dir, stem, **options)
        return written, _labelled_summary(result, "no detection")
    if task == "instance":
        written = write_instance_outputs(result, image, out_dir, stem, **options)
        return written, _labelled_summary(result, "no instance")
    written = write_semantic_outputs(result, image, out_dir, stem, **options)
    present = [
        f"{c['name']} {100 * c['area_fraction']:.1f}%"
        for c in sorted(result.to_dict()["classes"], key=lambda c: -c["area"])
        if c["area"] > 0
    ]
    return written, ", ".join(present)


def _predict_one(
    pipeline, task: str, image, args: argparse.Namespace, out_dir: Path, stem: str, source: str
):
    """Run one image; returns (files written, one-line summary, result). Each JSON names
    ``source``."""
    result = _infer(pipeline, task, image, args)
    written, line = _write_result(task, result, image, args, out_dir, stem, source)
    return written, line, result


def _export_session(
    args: argparse.Namespace, out_dir: Path, source_root: Path, image_ids: dict | None = None
):
    """The ``--export`` session writing into ``<out>/export`` (None without ``--export``)."""
    if not args.export:
        return None
    from ovseg.export import parse_formats
    from ovseg.export.session import ExportSession

    return ExportSession(
        out_dir / "export",
        parse_formats(args.export),
        mask_format=args.export_masks,
        polygon_tolerance=args.polygon_tolerance,
        source_root=source_root,
        resume=args.skip_existing,
        image_ids=image_ids,
    )


def _load_for(pipeline):
    """``path -> (decoded HWC uint8 image, model input)``: what folder runs do in worker
    threads (the pipeline's ``load_image`` resizes there where it can)."""
    from ovseg.io import read_image

    load_image = getattr(pipeline, "load_image", None)

    def load(path: Path):
        image = read_image(path)
        return image, (load_image(image) if load_image is not None else image)

    return load


def _progress(items: list, args: argparse.Namespace, shard: Shard):
    """A progress bar with images/s on stderr: only on a terminal, not with --quiet, and only
    in the first process of a torchrun job."""
    from tqdm import tqdm

    quiet = args.quiet or shard.rank != 0
    return tqdm(items, desc="predict", unit="img", disable=True if quiet else None, file=sys.stderr)


def _run_folder(
    pipeline,
    args,
    source: Path,
    images: list[Path],
    out_dir: Path,
    shard: Shard | None = None,
    image_ids: dict | None = None,
) -> int:
    """Predict every image under ``source``; a bad image is reported, not fatal.

    Images are decoded (and resized, see ``load_image``) in ``--workers`` threads, at most
    a few ahead of the model; outputs are written by a writer thread behind it (atomic files,
    a failed write reported for its image). Under torchrun each process takes every
    ``world``-th image and the first one writes the merged report. Writes ``report.json``
    (atomically, also after an interruption) and returns 1 when an image failed, else 0.
    """
    from tqdm import tqdm

    from ovseg.fileio import atomic_write_json
    from ovseg.inference.streaming import BackgroundWriter, prefetch

    shard = shard or Shard()
    relatives = [path.relative_to(source) for path in images]
    stems = output_stems(relatives)
    entries = list(enumerate(zip(images, relatives, strict=True)))[shard.rank :: shard.world]
    done: list[tuple[int, dict]] = []
    failed: list[tuple[int, dict]] = []
    skipped: list[tuple[int, dict]] = []
    export = _export_session(args, out_dir, source, image_ids)
    workers = max(0, int(args.workers))
    say = (lambda line: None) if args.quiet else (lambda line: tqdm.write(line))

    def is_done(entry) -> bool:
        _, (_, rel) = entry
        stem = stems[rel]
        return (
            args.skip_existing
            and _done_before(out_dir / f"{stem}.json", rel.as_posix())
            and (export is None or export.has(rel.as_posix(), stem.as_posix()))
        )

    todo = []
    for entry in entries:
        if is_done(entry):
            index, (_, rel) = entry
            skipped.append((index, {"source": rel.as_posix(), "json": f"{stems[rel]}.json"}))
        else:
            todo.append(entry)

    def write_job(index: int, rel: Path, image, result):
        name, stem = rel.as_posix(), stems[rel]
        target = out_dir / stem.parent

        def job():
            target.mkdir(parents=True, exist_ok=True)
            written, line = _write_result(args.task, result, image, args, target, stem.name, name)
            if export is not None:
                export.add(name, stem.as_posix(), image.shape[:2], result)
            outputs = {k: Path(v).relative_to(out_dir).as_posix() for k, v in written.items()}
            done.append((index, {"source": name, "outputs": outputs}))
            say(f"{name}: {line}")

        return job

    def fail(index: int, name: str, exc: Exception) -> None:
        failed.append((index, {"source": name, "reason": str(exc) or type(exc).__name__}))
        say(f"{name}: failed (see the summary at the end)")

    load = _load_for(pipeline)
    interrupted = True
    writer = BackgroundWriter(depth=4, threaded=workers > 0)
    try:
        loaded_items = prefetch(
            lambda entry: load(entry[1][0]), todo, workers=workers, depth=2 * max(workers, 1)
        )
        for loaded in _progress(loaded_items, args, shard):
            index, (_, rel) = loaded.item
            try:
                image, model_input = loaded.get()
                result = _infer(pipeline, args.task, model_input, args)
            except OVSegError as exc:
                fail(index, rel.as_posix(), exc)
                continue
            writer.submit((index, rel.as_posix()), write_job(index, rel, image, result))
        writer.close()
        interrupted = False
    finally:
        for (index, name), exc in writer.close():
            fail(index, name, exc)
        parts = {"ok": done, "failed": failed, "skipped": skipped}
        if shard.world > 1 and not interrupted:
            parts = shard.gather(parts)
        merged = {key: [entry for _, entry in sorted(value)] for key, value in parts.items()}
        report = {
            "input": str(source),
            "task": args.task,
            "complete": not interrupted,
            "counts": {
                "images": len(images),
                "ok": len(merged["ok"]),
                "failed": len(merged["failed"]),
                "skipped": len(merged["skipped"]),
            },
            **merged,
        }
        if shard.world > 1 and interrupted:  # no merge possible: each process keeps its part
            report["shard"] = {"rank": shard.rank, "world_size": shard.world}
            atomic_write_json(out_dir / f"report.rank{shard.rank}.json", report, indent=2)
        elif shard.rank == 0:
            if export is not None:
                report["export"] = export.finish(complete=not interrupted)
            atomic_write_json(out_dir / REPORT_NAME, report, indent=2)
    done_all, failed_all = merged["ok"], merged["failed"]
    if shard.rank != 0:
        return 1 if failed_all else 0
    if not args.quiet:
        print(
            f"{len(done_all)} image(s) done, {len(merged['skipped'])} skipped (done before), "
            f"{len(failed_all)} failed; results and {REPORT_NAME} in {out_dir}"
        )
    if failed_all:
        print(f"{len(failed_all)} image(s) failed:", file=sys.stderr)
        for entry in failed_all:
            print(f"  {entry['source']}: {entry['reason']}", file=sys.stderr)
        return 1
    return 0


def _dataset_dicts_input(source: Path) -> tuple[Path, list[Path], dict[str, int]] | None:
    """For a detectron2 dataset-dicts JSON: ``(folder above every image, image paths, image
    path relative to that folder -> image_id)``; None for other inputs."""
    if not (source.suffix.lower() == ".json" and source.is_file()):
        return None
    from ovseg.data.detectron2 import load_dataset_dicts, resolve_path

    dicts = load_dataset_dicts(source)
    images = [resolve_path(d["file_name"], source.parent).resolve() for d in dicts]
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise OVSegError(
            f"{len(missing)} images named in {source} do not exist (relative file_name values "
            f"are taken under {source.parent}): {', '.join(missing[:5])}."
        )
    root = Path(os.path.commonpath([p.parent for p in images]))
    ids = {
        p.relative_to(root).as_posix(): d["image_id"]
        for p, d in zip(images, dicts)
        if isinstance(d.get("image_id"), int) and not isinstance(d.get("image_id"), bool)
    }
    return root, images, ids


class Shard:
    """This process's part of a torchrun job (rank 0 of 1 without one)."""

    def __init__(self, rank: int = 0, world: int = 1, owns_group: bool = False) -> None:
        self.rank, self.world, self.owns_group = rank, world, owns_group

    @classmethod
    def from_environment(cls, device: str | None) -> Shard:
        """Join the torchrun job named by ``WORLD_SIZE`` / ``RANK`` (Gloo on the CPU, NCCL on
        CUDA); one process when there is none."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from ovseg.engine.dist import init_distributed

        info = init_distributed("cuda" if device and device.startswith("cuda") else "cpu")
        return cls(info.rank, info.world_size, info.initialized_here)

    def device_for(self, device: str | None) -> str | None:
        """``--device cuda`` means this process's GPU (``LOCAL_RANK``) under torchrun."""
        if self.world > 1 and device == "cuda":
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        return device

    def gather(self, parts: dict[str, list]) -> dict[str, list]:
        """Every process's lists, concatenated (the same on every process)."""
        from ovseg.engine.dist import all_gather_object

        gathered = all_gather_object(parts)
        return {key: [item for part in gathered for item in part[key]] for key in parts}

    def close(self, *, wait_for_peers: bool = True) -> None:
        """Leave the job. With ``wait_for_peers`` (the normal end) every process first waits
        at a barrier: a process that tore its Gloo connections down while a peer was still
        writing its report could abort (SIGABRT) at exit. After an error nobody waits, as the
        peers may never reach the barrier."""
        if self.owns_group:
            import torch.distributed as dist

            if wait_for_peers:
                dist.barrier()
            dist.destroy_process_group()


def cmd_predict(args: argparse.Namespace) -> int:
    inputs, overrides = split_overrides([args.input, *args.overrides])
    if len(inputs) != 1:
        raise OVSegError(f"predict takes one image or folder, got {inputs}.")
    _check_task_arguments(args)
    if args.pipeline and (args.vocab_free or args.video):
        raise OVSegError(
            "--pipeline picks a section of the preset for a vocabulary of yours; drop it with "
            "--vocab-free or --video."
        )
    vocabulary = _vocabulary_from_args(args)
    source, out_dir = Path(inputs[0]), Path(args.out)
    if args.video:
        from ovseg.commands.video import check_video_arguments, predict_video

        check_video_arguments(args)
        if not source.exists():
            raise OVSegError(f"{source} does not exist; give a video file or a frame folder.")
        check_device(args.device)
        _check_out_dir(out_dir)
        return predict_video(args, source, out_dir, vocabulary, overrides)
    dataset = _dataset_dicts_input(source)
    images = dataset[1] if dataset else _collect_images(source, out_dir)
    if args.vocab_free and (vocabulary is not None or args.task in PROMPTED_TASKS):
        raise OVSegError(
            "--vocab-free finds the class names itself: drop --vocab/--vocab-file "
            "(it runs the semantic or the instance task)."
        )
    if args.db and not args.vocab_free:
        raise OVSegError("--db goes with --vocab-free.")
    if args.task == "detection" and (args.vocab_free or args.export):
        raise OVSegError(
            "--task detection takes a vocabulary (--vocab/--vocab-file or the preset's) and "
            "writes its boxes as COCO results itself (<stem>_coco.json); drop --vocab-free/--export."
        )
    if args.export and args.task == "reasoning":
        raise OVSegError(
            "--export writes semantic, referring and instance results; --task reasoning writes "
            "its masks and answer as PNG and JSON files only (drop --export)."
        )
    if args.export:
        from ovseg.export import parse_formats

        parse_formats(args.export)
        if not args.polygon_tolerance >= 0:
            raise OVSegError(
                f"--polygon-tolerance is in pixels, >= 0; got {args.polygon_tolerance}."
            )
    check_device(args.device)
    _check_out_dir(out_dir)
    if int(args.workers) < 0:
        raise OVSegError(f"--workers is a number of threads >= 0, got {args.workers}.")
    if args.export and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise OVSegError(
            "--export writes one dataset from every image and cannot be split across torchrun "
            "processes; run it in one process (python -m ovseg.cli predict ...)."
        )
    single_done = (dataset is None and not source.is_dir()) and _done_before(
        out_dir / f"{source.stem}.json", source.name
    )
    if args.skip_existing and single_done:
        if not args.quiet:
            print(f"{source.name}: done before ({out_dir / source.stem}.json); skipped")
        return 0
    shard = Shard.from_environment(args.device)
    try:
        code = _predict_input(args, shard, source, images, out_dir, vocabulary, overrides, dataset)
    except BaseException:
        shard.close(wait_for_peers=False)
        raise
    shard.close()
    return code


def _predict_input(
    args, shard: Shard, source: Path, images, out_dir: Path, vocabulary, overrides, dataset=None
):
    from ovseg.api import DEFAULT_PRESET, create_pipeline
    from ovseg.config import save_resolved_config
    from ovseg.io import read_image

    device = shard.device_for(args.device)
    if args.vocab_free:
        from ovseg.api import build_vocab_free_pipeline

        pipeline = build_vocab_free_pipeline(
            args.preset or DEFAULT_PRESET,
            args.db,
            device,
            overrides=overrides,
            task=args.task,
        )
    else:
        pipeline = create_pipeline(
            args.preset or DEFAULT_PRESET,
            vocabulary,
            task=args.pipeline or args.task,
            overrides=overrides,
            device=device,
        )
    if shard.rank == 0:
        save_resolved_config(pipeline.config, out_dir / "config.yaml")
    if dataset is not None:
        return _run_folder(pipeline, args, dataset[0], images, out_dir, shard, dataset[2])
    if source.is_dir():
        return _run_folder(pipeline, args, source, images, out_dir, shard)
    if shard.rank != 0:  # one image: the first process does it
        return 0
    image = read_image(source)
    written, line, result = _predict_one(
        pipeline, args.task, image, args, out_dir, source.stem, source.name
    )
    export = _export_session(args, out_dir, source.parent)
    if export is not None:
        export.add(source.name, source.stem, image.shape[:2], result)
        written["export"] = Path(export.finish()["folder"])
    if not args.quiet:
        print(f"{source.name}: {line}")
        print(f"wrote {len(written)} file(s) to {out_dir}")
    return 0


def predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovseg predict",
        description="Segment an image or a folder: semantic maps, one phrase's mask "
        "(--task referring --prompt PHRASE), named instances (--task instance), boxes "
        "(--task detection) or an answer with its masks (--task reasoning --prompt QUESTION).",
    )
    p.add_argument(
        "input", help="image file, folder, or detectron2 dataset-dicts JSON (a list of dicts)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--preset", help="preset name or config YAML (default: shapes-tiny)")
    p.add_argument(
        "--task",
        choices=("semantic", "referring", "instance", "detection", "reasoning"),
        default="semantic",
        help="semantic (default), referring (needs --prompt), instance, detection or reasoning "
        "(needs --prompt; READ presets); the preset needs a pipelines.<task> section for all but "
        "the first",
    )
    p.add_argument(
        "--pipeline",
        metavar="NAME",
        help="run the preset's pipelines.NAME section for the task instead of the task's own; it "
        "must give the task's results (e.g. --pipeline semantic_painted: SAM's named masks "
        "painted over the semantic map, shapes-tiny)",
    )
    p.add_argument(
        "--prompt",
        help="with --task referring: the phrase to segment; with --task reasoning: the question",
    )
    p.add_argument(
        "--vocab-free",
        action="store_true",
        help="find the class names in a text database (CaSED) instead of taking a vocabulary",
    )
    p.add_argument("--db", help="with --vocab-free: database folder (default: the preset's)")
    p.add_argument("--vocab", help="classes separated by commas, synonyms by '|'")
    p.add_argument("--vocab-file", help="class file: one class per line, synonyms after commas")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="folder runs: skip the images whose results are already in --out (resume a run)",
    )
    p.add_argument(
        "--export",
        help="also write the results as a labelled dataset in OUT/export/<format>: formats "
        "separated by commas from coco, yolo, labelme, cvat, ade, detectron2 (detectron2's "
        "sem_seg_predictions.json / coco_instances_results.json)",
    )
    p.add_argument(
        "--export-masks",
        choices=("rle", "polygon"),
        default="rle",
        help="COCO and CVAT masks as RLE (default, exact) or polygons (holes filled)",
    )
    p.add_argument(
        "--polygon-tolerance",
        type=float,
        default=1.0,
        help="polygon simplification (cv2.approxPolyDP epsilon) in pixels (default 1.0)",
    )
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="also show the input image left of each overlay picture (image | overlay)",
    )
    v = p.add_argument_group("video (--video)")
    v.add_argument(
        "--video",
        action="store_true",
        help="INPUT is a video (mp4, mov, webm, mkv, avi) or a folder of frames: find the "
        "objects (--task referring/instance) and track them; writes per-frame PNGs, an overlay "
        "MP4 and <name>_tracks.json",
    )
    v.add_argument("--start-frame", type=int, default=0, help="first frame (0-based)")
    v.add_argument("--end-frame", type=int, help="stop before this frame")
    v.add_argument("--frame-step", type=int, default=1, help="process every N-th frame")
    v.add_argument("--fps", type=float, help="frame folders: frame rate for timestamps")
    v.add_argument("--max-frames", type=int, help="refuse selections of more frames")
    v.add_argument("--propagation", choices=("sam2", "redetect"), help="default: the preset's")
    v.add_argument("--redetect-every", type=int, help="sam2: run the detector every K frames")
    v.add_argument("--match-threshold", type=float, help="mask IoU to continue a track")
    v.add_argument("--matching", choices=("hungarian", "greedy"))
    v.add_argument("--patience", type=int, help="frames a track may be missing before it ends")
    v.add_argument("--no-overlay", action="store_true", help="no overlay MP4")
    v.add_argument("--overwrite", action="store_true", help="replace an earlier run's results")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="folder runs: threads decoding and resizing the next images while the model runs, "
        "and a writer thread for the outputs (default 2; 0: one image after the other)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-image lines")
    p.set_defaults(func=cmd_predict)
    return p
