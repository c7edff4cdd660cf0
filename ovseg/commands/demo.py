"""``ovseg demo``: serve the interactive demo (see ``demo/README.md``).

The serving options are checked (:func:`ovseg.demo.security.resolve_settings`) before gradio or
any model is loaded, so an unsafe launch is refused at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ovseg.demo import security
from ovseg.demo.handlers import default_examples_dir
from ovseg.errors import ConfigError, OVSegError


def cmd_demo(args: argparse.Namespace) -> int:
    """Validate the options, build the pipelines and serve until interrupted."""
    from ovseg.api import DEFAULT_PRESET

    examples_dir = None if args.no_examples else args.examples_dir
    if examples_dir is None and not args.no_examples:
        examples_dir = default_examples_dir()
    settings = security.resolve_settings(
        host=args.host,
        port=args.port,
        public=args.public,
        share=args.share,
        auth=args.auth,
        auth_file=args.auth_file,
        max_upload_mb=args.max_upload_mb,
        queue_size=args.queue_size,
        concurrency=args.concurrency,
        examples_dir=examples_dir,
        video_max_mb=args.video_max_mb,
        video_max_frames=args.video_max_frames,
    )
    if args.config is not None and not Path(args.config).is_file():
        raise ConfigError(f"Config file {args.config} does not exist.")
    source = args.config or args.preset or DEFAULT_PRESET

    from ovseg.demo.app import serve

    serve(settings, source, overrides=args.overrides, device=args.device, block=True)
    return 0


def demo_parser() -> argparse.ArgumentParser:
    """The ``ovseg demo`` argument parser (``func`` set to :func:`cmd_demo`)."""
    p = argparse.ArgumentParser(
        prog="ovseg demo",
        description=(
            "Serve the interactive demo. It listens on 127.0.0.1 only unless --public or --share "
            "is given, and those need --auth or --auth-file."
        ),
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", help="preset name (default: shapes-tiny; see ovseg list)")
    source.add_argument("--config", help="pipeline config YAML")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--host", help="interface to listen on (default 127.0.0.1; 0.0.0.0 with --public)"
    )
    p.add_argument("--port", type=int, default=security.DEFAULT_PORT, help="default 7860")
    p.add_argument("--public", action="store_true", help="listen on all interfaces (needs a login)")
    p.add_argument("--share", action="store_true", help="open a gradio share link (needs a login)")
    login = p.add_mutually_exclusive_group()
    login.add_argument(
        "--auth", metavar="USER:PASS", help="one login (visible in ps; prefer a file)"
    )
    login.add_argument("--auth-file", metavar="FILE", help="logins, one user:password per line")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=security.DEFAULT_MAX_UPLOAD_MB,
        help="largest upload in MiB (default 10); larger ones get HTTP 413",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=security.DEFAULT_QUEUE_SIZE,
        help="requests that may wait (default 16); more are told the app is busy",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=security.DEFAULT_CONCURRENCY,
        help="requests running models at once (default 1)",
    )
    p.add_argument(
        "--video-max-mb",
        type=float,
        default=security.DEFAULT_VIDEO_MAX_MB,
        help="largest clip the video tab takes, in MiB (default 8)",
    )
    p.add_argument(
        "--video-max-frames",
        type=int,
        default=security.DEFAULT_VIDEO_MAX_FRAMES,
        help="most frames of a clip the video tab takes (default 300)",
    )
    examples = p.add_mutually_exclusive_group()
    examples.add_argument(
        "--examples-dir",
        help="folder of example images with same-stem .txt class files (the only folder served; "
        "default: demo/examples of a source checkout)",
    )
    examples.add_argument("--no-examples", action="store_true", help="serve no example folder")
    p.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ovseg demo`` with ``argv`` (default: ``sys.argv[1:]``); 2 on a user error."""
    args = demo_parser().parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args) or 0)
    except OVSegError as exc:
        print(f"ovseg demo: error: {exc}", file=sys.stderr)
        return 2
