"""Serving rules of the demo: where it listens, who may log in, what it accepts and serves.

Defaults keep the demo private: it listens on 127.0.0.1 only. Listening on other interfaces
(``--public``, or a ``--host`` that is not a loopback address) or opening a share link
(``--share``) needs that flag *and* a login (``--auth user:pass`` or ``--auth-file``); without a
login the launch is refused with :class:`~ovseg.errors.InsecureLaunchError`. Uploads are capped
(``max_upload_bytes``), only the examples folder is served besides the app's own files, and a
bounded queue with a concurrency limit answers extra users with "busy" instead of hanging.

Nothing here imports gradio: the rules are checked before the server (and gradio) is loaded.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovseg.errors import ConfigError, InsecureLaunchError

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
PUBLIC_HOST = "0.0.0.0"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_QUEUE_SIZE = 16
DEFAULT_CONCURRENCY = 1
MIB = 1024 * 1024
#: the video tab's budget: largest clip (MiB, under the upload cap) and most frames
DEFAULT_VIDEO_MAX_MB = 8.0
DEFAULT_VIDEO_MAX_FRAMES = 300
STATE_SESSIONS = 100

Credentials = tuple[str, str]


@dataclass(frozen=True)
class ServeSettings:
    """Validated serving settings (build with :func:`resolve_settings`).

    Attributes:
        host: interface to listen on; a loopback address unless ``public``.
        port: TCP port.
        public: listening beyond this machine (non-loopback host) was asked for explicitly.
        share: open a share link through gradio's tunnel.
        credentials: ``(user, password)`` pairs; empty means no login.
        max_upload_bytes: largest accepted upload (gradio answers larger ones with HTTP 413).
        queue_size: most requests waiting at once; more are refused as "busy".
        concurrency: requests of one task that run at the same time.
        examples_dir: the only folder served besides the app's own files (None: no examples).
        video_max_bytes, video_max_frames: the video tab refuses larger or longer clips.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    public: bool = False
    share: bool = False
    credentials: tuple[Credentials, ...] = ()
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * MIB)
    queue_size: int = DEFAULT_QUEUE_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    examples_dir: Path | None = None
    video_max_bytes: int = int(DEFAULT_VIDEO_MAX_MB * MIB)
    video_max_frames: int = DEFAULT_VIDEO_MAX_FRAMES

    @property
    def needs_auth(self) -> bool:
        return self.public or self.share

    def __repr__(self) -> str:  # never print passwords
        users = [user for user, _ in self.credentials]
        return (
            f"ServeSettings(host={self.host!r}, port={self.port}, public={self.public}, "
            f"share={self.share}, users={users}, max_upload_bytes={self.max_upload_bytes}, "
            f"queue_size={self.queue_size}, concurrency={self.concurrency}, "
            f"examples_dir={self.examples_dir}, video_max_bytes={self.video_max_bytes}, "
            f"video_max_frames={self.video_max_frames})"
        )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def parse_credentials(text: str) -> Credentials:
    """``"user:password"`` -> ``("user", "password")`` (the password may contain ':')."""
    user, sep, password = text.partition(":")
    user = user.strip()
    if not sep or not user or not password:
        raise ConfigError(
            "A login must be written 'user:password' with a non-empty user and password "
            "(e.g. --auth alice:a-long-secret)."
        )
    return user, password


def read_auth_file(path: str | os.PathLike) -> list[Credentials]:
    """Logins from a text file: one ``user:password`` per line; blank and ``#`` lines skipped.

    A file readable by other users of this machine is accepted with a logged warning.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Auth file {path} does not exist; write one 'user:password' line per login."
        )
    if os.name != "nt" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning("auth file %s is readable by other users; chmod 600 it", path)
    logins = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            logins.append(parse_credentials(line.rstrip("\r\n")))
        except ConfigError:
            raise ConfigError(
                f"{path}, line {number}: expected 'user:password' with both parts non-empty."
            ) from None
    if not logins:
        raise ConfigError(f"Auth file {path} holds no 'user:password' line.")
    return logins


def resolve_settings(
    *,
    host: str | None = None,
    port: int = DEFAULT_PORT,
    public: bool = False,
    share: bool = False,
    auth: str | None = None,
    auth_file: str | os.PathLike | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    examples_dir: str | os.PathLike | None = None,
    video_max_mb: float = DEFAULT_VIDEO_MAX_MB,
    video_max_frames: int = DEFAULT_VIDEO_MAX_FRAMES,
) -> ServeSettings:
    """Check the serving options against the rules in the module docstring.

    Raises:
        InsecureLaunchError: non-loopback listening without ``public``; ``public`` or ``share``
            without a login.
        ConfigError: malformed logins, out-of-range numbers, a missing examples folder, or
            ``GRADIO_ALLOWED_PATHS`` set while there is no examples folder (gradio would serve
            those paths instead).
    """
    if host is None:
        host = PUBLIC_HOST if public else DEFAULT_HOST
    if not is_loopback(host) and not public:
        raise InsecureLaunchError(
            f"--host {host} would make the demo reachable from other machines; add --public "
            "(with --auth or --auth-file) to do that on purpose, or keep the default 127.0.0.1."
        )
    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"--port must be in 1-65535, not {port}.")
    if auth and auth_file:
        raise ConfigError("Give either --auth or --auth-file, not both.")
    credentials: list[Credentials] = []
    if auth:
        credentials.append(parse_credentials(auth))
    elif auth_file:
        credentials.extend(read_auth_file(auth_file))
    if (public or share) and not credentials:
        what = " and ".join(f for f, on in (("--public", public), ("--share", share)) if on)
        raise InsecureLaunchError(
            f"Refusing to start: {what} makes the demo reachable by others, so a login is "
            "required. Add --auth user:password or --auth-file FILE (one user:password per line)."
        )
    if not max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be positive, not {max_upload_mb}.")
    if not video_max_mb > 0 or int(video_max_frames) < 1:
        raise ConfigError(
            "--video-max-mb must be positive and --video-max-frames at least 1 "
            f"(got {video_max_mb}, {video_max_frames})."
        )
    if int(queue_size) < 1 or int(concurrency) < 1:
        raise ConfigError(
            f"--queue-size and --concurrency must be at least 1 (got {queue_size}, {concurrency})."
        )
    folder = None
    if examples_dir is not None:
        folder = Path(examples_dir).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"Examples folder {folder} does not exist.")
    elif os.environ.get("GRADIO_ALLOWED_PATHS"):
        raise ConfigError(
            "GRADIO_ALLOWED_PATHS is set, and without an examples folder gradio would serve those "
            "paths; unset it (the demo serves its examples folder only)."
        )
    return ServeSettings(
        host=host,
        port=int(port),
        public=bool(public),
        share=bool(share),
        credentials=tuple(credentials),
        max_upload_bytes=int(max_upload_mb * MIB),
        queue_size=int(queue_size),
        concurrency=int(concurrency),
        examples_dir=folder,
        video_max_bytes=int(video_max_mb * MIB),
        video_max_frames=int(video_max_frames),
    )


def credentials_checker(credentials: Sequence[Credentials]) -> Callable[[str, str], bool]:
    """A gradio ``auth`` callable comparing user and password in constant time."""
    table = [(u.encode("utf-8"), p.encode("utf-8")) for u, p in credentials]

    def check(username: str, password: str) -> bool:
        given_user = str(username).encode("utf-8")
        given_password = str(password).encode("utf-8")
        ok = False
        for user, secret in table:  # no early exit: timing does not reveal which user matched
            ok |= hmac.compare_digest(given_user, user) & hmac.compare_digest(
                given_password, secret
            )
        return ok

    return check


def allowed_paths(settings: ServeSettings) -> list[str]:
    """What gradio may serve from disk besides its own upload/cache folders."""
    return [str(settings.examples_dir)] if settings.examples_dir is not None else []


def launch_kwargs(settings: ServeSettings) -> dict[str, Any]:
    """Keyword arguments of ``gradio.Blocks.launch`` that enforce ``settings``.

    Besides binding, login, upload cap and served paths, it turns off what would call out or
    expose more than the demo: run history, the monitoring page, the MCP server, SSR (Node).
    """
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "share": settings.share,
        "auth": credentials_checker(settings.credentials) if settings.credentials else None,
        "auth_message": "ovseg demo: log in with the user and password given to the server.",
        "max_file_size": settings.max_upload_bytes,
        "allowed_paths": allowed_paths(settings),
        "show_error": False,
        "strict_cors": True,
        "enable_monitoring": False,
        "run_history": False,
        "mcp_server": False,
        "ssr_mode": False,
        "pwa": False,
        "footer_links": ["api", "settings"],
        # Sessions whose last result (image + labels, for the opacity slider) stays in memory.
        "state_session_capacity": STATE_SESSIONS,
    }
