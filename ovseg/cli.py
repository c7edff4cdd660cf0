"""The ``ovseg`` command: ``list``, ``config``, ``eval``, ``train`` and ``data synth`` here; the
other commands (``predict``, ``db``, ``demo``, ``config import``) in :mod:`ovseg.commands`, each
module imported only when its command runs.

Every subcommand takes trailing ``key=value`` config overrides where a config is involved, and
writes the fully resolved config next to its outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ovseg.commands.common import split_overrides
from ovseg.devices import check_device
from ovseg.errors import OVSegError


def __getattr__(name: str):
    """``ovseg.cli.output_stems``, imported from :mod:`ovseg.commands.predict` on first use."""
    if name == "output_stems":
        from ovseg.commands.predict import output_stems

        return output_stems
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- list / config
def cmd_list(args: argparse.Namespace) -> int:
    from ovseg.registry import _ALL_REGISTRIES

    what = args.what
    if what in ("presets", "all"):
        from ovseg.preset_status import all_preset_status, format_presets

        print(format_presets(all_preset_status()))
    if what in ("models", "all"):
        import open_clip

        from ovseg.models.backbones.clip import register_packaged_model_configs

        register_packaged_model_configs()
        print("open_clip models (pretrained tags):")
        for name in open_clip.list_models():
            tags = open_clip.list_pretrained_tags_by_model(name)
            print(f"  {name}" + (f"  [{', '.join(tags)}]" if tags else ""))
    if what in ("components", "all"):
        for kind, registry in sorted(_ALL_REGISTRIES.items()):
            print(f"{kind}: {', '.join(registry.names()) or '-'}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from ovseg.config import load_config, to_container

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(to_container(cfg), sort_keys=False), end="")
    return 0


# ----------------------------------------------------------------------------- eval / train / data
def cmd_eval(args: argparse.Namespace) -> int:
    check_device(args.device)
    if args.limit is not None and args.limit < 1:
        raise OVSegError(f"--limit must be at least 1, got {args.limit}.")
    if args.suite:
        from ovseg.evaluation.suite import run_suite

        # with --suite every positional is a key=value override of the presets
        extra, overrides = split_overrides([*filter(None, [args.config]), *args.overrides])
        if extra:
            raise OVSegError(
                f"--suite runs the presets of --preset; it takes no config file ({extra[0]}). "
                "Give only key=value overrides."
            )
        if not args.preset or not args.data_root:
            raise OVSegError(
                "--suite needs --preset (a method, e.g. sclip-vitb16) and --data-root (the "
                "folder holding the datasets; see datasets/README.md)."
            )
        run_suite(
            args.suite,
            args.preset,
            args.data_root,
            overrides,
            work_dir=args.work_dir,
            device=args.device,
            limit=args.limit,
        )
        return 0
    if args.video:
        from ovseg.commands.video import evaluate_video_command

        extra, overrides = split_overrides([*filter(None, [args.config]), *args.overrides])
        if extra:
            raise OVSegError(f"--video evaluates --preset on DATA.json; unexpected {extra[0]}.")
        return evaluate_video_command(args, overrides)
    if not args.config:
        raise OVSegError(
            "Give a config with a data.test section (ovseg eval CONFIG), or run a benchmark "
            "suite (ovseg eval --suite ovss8 --preset P --data-root DIR)."
        )
    if args.preset or args.data_root:
        raise OVSegError("--preset and --data-root go with --suite; a config names its own data.")
    from ovseg.evaluation.loop import evaluate

    evaluate(
        args.config, args.overrides, work_dir=args.work_dir, device=args.device, limit=args.limit
    )
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    if args.video:
        from ovseg.data.synthetic_video import write_synthetic_videos

        summary = write_synthetic_videos(
            args.out,
            num_train=args.num,
            num_val=args.num if args.num_val is None else args.num_val,
            seed=args.seed,
            num_frames=args.frames,
            image_size=args.image_size or 64,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
        print(json.dumps(summary, indent=2, default=str))
        return 0
    from ovseg.data.writers import write_synthetic_world

    summary = write_synthetic_world(
        args.out,
        num_train=args.num,
        num_val=args.num_val,
        seed=args.seed,
        image_size=args.image_size or 128,
        crop_size=args.crop_size,
        formats=tuple(args.formats.split(",")),
        progress=not args.quiet,
        overwrite=args.overwrite,
        neighbour_fraction=args.neighbour_fraction,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


# ----------------------------------------------------------------------------- parsers
def _list_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovseg list", description="List presets, models or components."
    )
    p.add_argument(
        "what", nargs="?", default="presets", choices=["presets", "models", "components", "all"]
    )
    p.set_defaults(func=cmd_list)
    return p


def _config_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovseg config", description="Print a config fully resolved.")
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=cmd_config)
    return p


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovseg eval",
        description="Evaluate a config on its test data (mIoU table + JSON), or a method preset "
        "on a benchmark suite (--suite ovss8: VOC21, PC60, Object, VOC20, PC59, Stuff, City, "
        "ADE; one paper-style row + JSON).",
    )
    p.add_argument("config", nargs="?", help="config YAML (or preset) with a data.test section")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--suite", help="benchmark suite to run instead of a config (ovss8)")
    p.add_argument("--preset", help="with --suite: method preset P; runs P-voc21, P-pc60 ...")
    p.add_argument(
        "--data-root", help="with --suite: folder holding the datasets (datasets/README.md)"
    )
    p.add_argument("--work-dir", help="where results.json and config.yaml go")
    p.add_argument("--device", help="cpu, cuda ...")
    p.add_argument("--limit", type=int, help="evaluate only the first N images (smoke runs)")
    v = p.add_argument_group("video (--video DATA.json)")
    v.add_argument(
        "--video",
        help="YouTube-VIS JSON of video clips (ovseg data synth --video): track AP (--task "
        "instance) or J&F (--task referring) of --preset's video pipeline",
    )
    v.add_argument("--frames", help="folder of the clip folders (default: <json stem>/JPEGImages)")
    v.add_argument("--task", choices=("instance", "referring"), help="default: instance")
    v.add_argument(
        "--class-agnostic",
        action="store_true",
        help="instance task: score the tracks as one class (masks and tracking alone)",
    )
    v.add_argument("--propagation", choices=("sam2", "redetect"))
    v.add_argument("--redetect-every", type=int)
    v.add_argument("--match-threshold", type=float)
    v.add_argument("--matching", choices=("hungarian", "greedy"))
    v.add_argument("--patience", type=int)
    v.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)
    return p


def _synth_parser() -> argparse.ArgumentParser:
    s = argparse.ArgumentParser(
        prog="ovseg data synth", description="Write the synthetic open-vocabulary world."
    )
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--num", type=int, required=True, help="number of training scenes (clips)")
    s.add_argument(
        "--num-val",
        type=int,
        help="validation scenes (default max(50, num/10)); with --video validation clips "
        "(default: --num)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int, help="side in pixels (default 128; videos 64)")
    s.add_argument(
        "--video",
        action="store_true",
        help="write video clips of moving shapes with YouTube-VIS ground truth instead",
    )
    s.add_argument("--frames", type=int, default=12, help="with --video: frames per clip")
    s.add_argument("--crop-size", type=int, default=64, help="caption crop size")
    s.add_argument("--formats", default="ade20k,coco,captions")
    s.add_argument(
        "--neighbour-fraction",
        type=float,
        default=0.0,
        help="probability that an object after a scene's first is another shape of an earlier "
        "object's colour, placed against it (default 0)",
    )
    s.add_argument("--overwrite", action="store_true", help="replace existing format folders")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_data_synth)
    return s


COMMANDS = {
    "list": (_list_parser, "list presets, open_clip models or registered components"),
    "config": (_config_parser, "print a preset or config fully resolved"),
    "config import": (
        "ovseg.commands.config_import:import_parser",
        "convert an mmseg evaluation config (SCLIP, NACLIP, ClearCLIP, ProxyCLIP) to a preset",
    ),
    "predict": ("ovseg.commands.predict:predict_parser", "segment an image or a folder of images"),
    "eval": (_eval_parser, "evaluate a config on its dataset (mIoU table + JSON)"),
    "train": (None, "train from a config (torchrun for several processes)"),
    "data synth": (_synth_parser, "write the synthetic open-vocabulary world"),
    "demo": ("ovseg.commands.demo:demo_parser", "serve the interactive demo in a browser (gradio)"),
    "db build": (
        "ovseg.commands.db:build_parser",
        "encode a text corpus into a database for vocabulary-free search",
    ),
    "db merge": (
        "ovseg.commands.db:merge_parser",
        "write the database of a sharded (torchrun) build",
    ),
    "db info": ("ovseg.commands.db:info_parser", "describe and verify a text database"),
    "db search": (
        "ovseg.commands.db:search_parser",
        "name an image (or a box of it) with a text database",
    ),
}


def _usage() -> str:
    lines = ["usage: ovseg COMMAND [ARGS] (ovseg COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def _parser_factory(entry) -> argparse.ArgumentParser:
    """A COMMANDS entry is a parser factory or a lazily imported ``"module:function"`` string."""
    if isinstance(entry, str):
        import importlib

        module, _, name = entry.partition(":")
        entry = getattr(importlib.import_module(module), name)
    return entry()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    groups = {name.split()[0] for name in COMMANDS if " " in name}
    if command in groups and command in COMMANDS:  # "config PRESET" or "config import ..."
        if rest and f"{command} {rest[0]}" in COMMANDS:
            command, rest = f"{command} {rest[0]}", rest[1:]
    elif command in groups:
        if not rest or f"{command} {rest[0]}" not in COMMANDS:
            choices = [name for name in COMMANDS if name.startswith(command + " ")]
            print(
                f"usage: ovseg {command} {{{','.join(c.split()[1] for c in choices)}}} ...",
                file=sys.stderr,
            )
            return 2
        command, rest = f"{command} {rest[0]}", rest[1:]
    if command not in COMMANDS:
        print(f"ovseg: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        if command == "train":
            from ovseg.engine.launch import main_train

            return main_train(rest)
        args = _parser_factory(COMMANDS[command][0]).parse_intermixed_args(rest)
        return int(args.func(args) or 0)
    except OVSegError as exc:
        print(f"ovseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ovseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
