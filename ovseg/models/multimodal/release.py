"""Where a released READ model and its CLIP vision tower are on this machine.

READ's models are Hugging Face folders of several GB (7B / 13B language models), fetched by the
user, never downloaded by ovseg on its own. A folder is found, in order: the explicit local path;
the Hugging Face cache (a complete snapshot of the repository, as ``hf download REPO`` leaves
it). Otherwise :class:`~ovseg.errors.WeightsNotFoundError` says which repository to download,
with which command, and which setting takes the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from ovseg.errors import WeightsNotFoundError
from ovseg.model_zoo.embedded import EMBEDDED_PREFIX, embedded_folder

__all__ = ["READ_VISION_TOWER_REPO", "cached_snapshot", "missing_folder_message", "resolve_folder"]

READ_VISION_TOWER_REPO = "openai/clip-vit-large-patch14-336"


def cached_snapshot(repo: str) -> Path | None:
    """The Hugging Face cache's snapshot of ``repo`` when it holds ``config.json``, else None."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # not cached (or no huggingface_hub): the caller reports what to fetch
        return None
    return folder if (folder / "config.json").is_file() else None


def missing_folder_message(what: str, repo: str | None, setting: str, looked_at: str) -> str:
    """The text of a missing-folder error: what to download, how, and where it goes."""
    if repo:
        fetch = (
            f"Download it with `hf download {repo} --local-dir DIR` (https://huggingface.co/"
            f"{repo}) and set {setting}=DIR, or run `hf download {repo}` to put it in the "
            "Hugging Face cache, where it is found by itself"
        )
    else:
        fetch = f"Set {setting}=DIR to the folder"
    return f"{what} not found ({looked_at}). {fetch}."


def resolve_folder(
    path: str | os.PathLike | None, repo: str | None, what: str, setting: str
) -> Path:
    """The local folder of ``what``: ``path`` if given (``embedded:<name>``: a packaged folder,
    verified), else the cached snapshot of ``repo``.

    Raises:
        WeightsNotFoundError: neither exists (the message names ``repo`` and ``setting``).
    """
    if isinstance(path, str) and path.startswith(EMBEDDED_PREFIX):
        return embedded_folder(path[len(EMBEDDED_PREFIX) :])
    if path is not None:
        folder = Path(path).expanduser()
        if (folder / "config.json").is_file():
            return folder
        looked_at = f"no config.json in {folder}"
    else:
        folder = cached_snapshot(repo) if repo else None
        if folder is not None:
            return folder
        looked_at = f"{repo} is not in the Hugging Face cache" if repo else "no folder given"
    raise WeightsNotFoundError(missing_folder_message(what, repo, setting, looked_at))
