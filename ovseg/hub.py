"""Reaching the hosts that publish weights: one offline switch, and downloads that fail fast.

``HF_HUB_OFFLINE`` set to a true value switches every download off. Otherwise a download first
checks, within a few seconds, that the host answers at all (a machine without network fails
here at once instead of retrying for a minute), then tries once.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from ovseg.errors import WeightsNotFoundError

PROBE_TIMEOUT_S = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


def is_offline() -> bool:
    """True when downloads are switched off (``HF_HUB_OFFLINE`` set to a true value)."""
    value = os.environ.get("HF_HUB_OFFLINE", "0").strip().lower()
    return value not in ("0", "", "false", "no", "off")


def hf_endpoint() -> str:
    """The Hugging Face endpoint downloads go to (``HF_ENDPOINT``, default huggingface.co)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def unreachable_reason(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when ``url``'s host accepts a connection within ``timeout`` s, else why not.

    Behind a proxy (``HTTPS_PROXY`` ...) the host is not probed directly: None.
    """
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:  # gaierror (no DNS), refused, unreachable, timeout
        detail = exc.strerror or type(exc).__name__
        return f"cannot reach {host}:{port}: {detail}"


def download_hf_file(repo_id: str, filenames: list[str], cache_dir: str | None = None) -> Path:
    """Download the first of ``filenames`` that ``repo_id`` holds into the Hugging Face cache.

    Raises:
        WeightsNotFoundError: offline, the endpoint does not answer, or no file could be
            fetched; the message is the reason only (callers add what to do).
    """
    if is_offline():
        raise WeightsNotFoundError("HF_HUB_OFFLINE is set")
    endpoint = hf_endpoint()
    reason = unreachable_reason(endpoint)
    if reason is not None:
        raise WeightsNotFoundError(f"no network: {reason}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for filename in filenames:
        try:
            path = hf_hub_download(repo_id, filename, cache_dir=cache_dir, endpoint=endpoint)
        except EntryNotFoundError:
            continue
        except Exception as exc:  # network and HTTP errors come in many types
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise WeightsNotFoundError(f"download failed: {type(exc).__name__}: {first}") from exc
        return Path(path)
    raise WeightsNotFoundError(f"{repo_id} holds none of {', '.join(filenames)}")


def download_url(url: str, destination: Path) -> Path:
    """Download ``url`` to ``destination`` (a temporary name, renamed when complete), once.

    Raises:
        WeightsNotFoundError: offline, the host does not answer, or the download failed.
    """
    if is_offline():
        raise WeightsNotFoundError("HF_HUB_OFFLINE is set")
    reason = unreachable_reason(url)
    if reason is not None:
        raise WeightsNotFoundError(f"no network: {reason}")
    import torch

    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(destination))
    except Exception as exc:  # network errors come in many types
        raise WeightsNotFoundError(
            f"download failed: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    return destination
