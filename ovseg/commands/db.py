"""``ovseg db build | merge | info | search``: parser factories and their command functions.

Each ``*_parser()`` returns an ``argparse.ArgumentParser`` whose defaults carry ``func``, the
command function (``args -> exit code``), as ``ovseg.cli`` expects.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any

DEFAULT_PRESET = "shapes-tiny"


def _backbone_from_preset(preset: str, device: str | None, overrides: list[str]) -> tuple:
    """``(ClipBackbone, pretrained tag, resolved config)`` of a preset's semantic pipeline."""
    import ovseg.models.backbones.clip  # noqa: F401  (registers ClipBackbone)
    from ovseg.config import load_config, to_container
    from ovseg.errors import ConfigError
    from ovseg.registry import BACKBONES

    cfg = load_config(preset, overrides)
    backbone_cfg = (to_container(cfg).get("pipeline") or {}).get("backbone")
    if not isinstance(backbone_cfg, dict):
        raise ConfigError(f"{preset} has no pipeline.backbone to encode texts with.")
    if device is not None:
        backbone_cfg["device"] = device
    return BACKBONES.build(backbone_cfg), backbone_cfg.get("pretrained"), cfg


def _device_for_rank(device: str | None) -> str | None:
    """``cuda`` under torchrun means this process's GPU (``cuda:LOCAL_RANK``)."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


# --------------------------------------------------------------------------------- build
def cmd_build(args: argparse.Namespace) -> int:
    from ovseg.cased.build import build_database

    backbone, pretrained, _ = _backbone_from_preset(
        args.preset, _device_for_rank(args.device), args.overrides
    )
    command = "ovseg db build " + " ".join(
        shlex.quote(a) for a in [
            "--texts", args.texts, "--preset", args.preset, "--out", args.out,
            "--kind", args.kind, "--index", args.index, "--batch-size", str(args.batch_size),
            *(["--column", args.column] if args.column else []),
            *(["--field", args.field] if args.field else []), "--overwrite", *args.overrides,
        ]
    )  # fmt: skip
    out = build_database(
        args.texts, backbone, args.out, pretrained=pretrained, kind=args.kind, index=args.index,
        batch_size=args.batch_size, chunk_batches=args.chunk_batches, column=args.column,
        field=args.field, resume=args.resume, overwrite=args.overwrite, rank=args.rank, world_size=args.world_size,
        merge=not args.no_merge, keep_shards=args.keep_shards, progress=not args.quiet,
        build_command=command,
    )  # fmt: skip
    if not args.quiet:
        if out is None:
            print(f"shard done; the database in {args.out} is written when every shard is "
                  f"(or run `ovseg db merge --out {args.out}`)")  # fmt: skip
        else:
            print(f"wrote database {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovseg db build",
        description="Encode a text corpus with a preset's CLIP text encoder into a FAISS "
        "database for vocabulary-free search. Under torchrun every process encodes its share; "
        "the last one to finish writes the database.",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--texts", required=True,
                   help="caption or concept list: a text file (one per line), CSV/TSV "
                   "(--column), JSON Lines (--field), Parquet (needs pyarrow; --column), a "
                   "Hugging Face datasets folder from save_to_disk (needs datasets; --column), "
                   "or a folder of such files; read streamed")  # fmt: skip
    p.add_argument("--preset", default=DEFAULT_PRESET, help="preset or config whose CLIP encodes")
    p.add_argument("--out", required=True, help="database folder")
    p.add_argument("--kind", default="captions", choices=["captions", "concepts"],
                   help="captions: names are extracted from retrieved texts; concepts: every "
                   "text is a name")  # fmt: skip
    p.add_argument("--index", default="auto", choices=["auto", "flat", "ivf", "ivfpq"])
    p.add_argument("--batch-size", type=int, default=256, help="texts per encoder call")
    p.add_argument("--chunk-batches", type=int, default=16, help="batches per checkpoint file")
    p.add_argument(
        "--column",
        help="CSV / Parquet / datasets column holding the texts "
        "(default: the first of caption, title, text, sentence, name, concept)",
    )
    p.add_argument("--field", help="JSON Lines field holding the texts (a.b for nested; "
                   "default: as --column)")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue an interrupted build")
    p.add_argument("--overwrite", action="store_true", help="replace an existing database")
    p.add_argument("--device", help="cpu, cuda (cuda:LOCAL_RANK under torchrun), cuda:1 ...")
    p.add_argument("--rank", type=int, help="this process's share (default: torchrun's RANK)")
    p.add_argument("--world-size", type=int, help="number of shares (default: WORLD_SIZE)")
    p.add_argument("--no-merge", action="store_true", help="only encode this share")
    p.add_argument("--keep-shards", action="store_true", help="keep the chunk files")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_build)
    return p


# --------------------------------------------------------------------------------- merge
def cmd_merge(args: argparse.Namespace) -> int:
    from ovseg.cased.build import merge_build

    out = merge_build(
        args.out, keep_shards=args.keep_shards, force=args.force, progress=not args.quiet
    )
    if not args.quiet:
        print(f"wrote database {out}")
    return 0


def merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovseg db merge",
        description="Write the database of a sharded build once every shard is encoded.",
    )
    p.add_argument("--out", required=True, help="database folder of the build")
    p.add_argument("--keep-shards", action="store_true", help="keep the chunk files")
    p.add_argument("--force", action="store_true", help="ignore a lock left by a crashed merge")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_merge)
    return p


# --------------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    from ovseg.cased.build import shard_status
    from ovseg.cased.database import describe, load_database
    from ovseg.errors import DatabaseError

    pending = shard_status(args.db)
    try:
        summary = describe(load_database(args.db, verify=not args.no_verify))
    except DatabaseError:
        if pending is None:
            raise
        summary = {"path": str(args.db)}
    if pending is not None:
        summary["unfinished_build"] = pending
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:>16}: {value}")
    return 0


def info_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovseg db info", description="Describe (and verify) a text database."
    )
    p.add_argument("db", help="database folder (or a packaged database's name)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 checks")
    p.set_defaults(func=cmd_info)
    return p


# --------------------------------------------------------------------------------- search
def _parse_box(text: str | None) -> list[float] | None:
    from ovseg.errors import ConfigError

    if text is None:
        return None
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4:
        raise ConfigError(f"--box takes x1,y1,x2,y2 in pixels, not {text!r}.")
    return box


def cmd_search(args: argparse.Namespace) -> int:
    from ovseg.cased.search import CasedSearch
    from ovseg.config import to_container
    from ovseg.errors import ConfigError

    box = _parse_box(args.box)  # cheap checks before the model is built
    backbone, pretrained, cfg = _backbone_from_preset(args.preset, args.device, args.overrides)
    section: Any = to_container(cfg).get("database") or {}
    section = {"path": section} if isinstance(section, str) else dict(section)
    path = args.db or section.pop("path", None)
    section.pop("path", None)
    if not path:
        raise ConfigError(f"{args.preset} names no database; pass --db DIR.")
    options = {
        **section,
        **{
            k: v
            for k, v in (("k", args.k), ("alpha", args.alpha), ("pos_filter", args.pos_filter))
            if v is not None
        },
    }
    search = CasedSearch(backbone, path, pretrained=pretrained, preset=args.preset, **options)
    result = search.search(args.image, box=box)
    if args.json:
        print(json.dumps(result.to_dict(top=args.top), indent=2))
    else:
        print(f"pos filter: {result.pos_filter}")
        for name, score in result.top(args.top):
            print(f"{score:7.4f}  {name}")
    return 0


def search_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovseg db search", description="Name an image (or a box of it) with a database."
    )
    p.add_argument("image", help="image file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--db", help="database folder (default: the preset's database)")
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--box", help="x1,y1,x2,y2 region in pixels")
    p.add_argument("--top", type=int, default=5, help="names to print")
    p.add_argument("--k", type=int, help="texts retrieved (default 10)")
    p.add_argument("--alpha", type=float, help="weight of the image term (default 0.7)")
    p.add_argument("--pos-filter", choices=["wordnet", "nltk", "none"],
                   help="candidate words kept: WordNet nouns/adjectives (default, offline), "
                   "nltk's tagger (needs its data), or all")  # fmt: skip
    p.add_argument("--device")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m ovseg.commands.db build|merge|info|search ...`` (e.g. under torchrun)."""
    from ovseg.errors import OVSegError

    argv = list(sys.argv[1:] if argv is None else argv)
    parsers = {"build": build_parser, "merge": merge_parser, "info": info_parser,
               "search": search_parser}  # fmt: skip
    if not argv or argv[0] not in parsers:
        print(f"usage: python -m ovseg.commands.db {{{','.join(parsers)}}} ...", file=sys.stderr)
        return 2
    args = parsers[argv[0]]().parse_intermixed_args(argv[1:])
    try:
        return int(args.func(args) or 0)
    except OVSegError as exc:
        print(f"ovseg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
