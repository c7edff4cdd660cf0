"""Finding SAM weights: a local file, a packaged ``(model_type, tag)``, or the official release.

Tags:

* ``"sa1b"`` (the default for ``vit_b`` / ``vit_l`` / ``vit_h``): Meta's released checkpoint,
  looked up as ``<torch hub dir>/checkpoints/<official file name>``; when the network is allowed
  (``HF_HUB_OFFLINE`` unset) it is downloaded there first.
* any tag in ``ovseg.model_zoo.embedded.EMBEDDED_WEIGHTS`` (e.g. ``"shapes"``): weights shipped
  inside the package, verified by sha256.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ovseg.errors import ConfigError, WeightsNotFoundError
from ovseg.hub import download_url
from ovseg.model_zoo.embedded import EMBEDDED_WEIGHTS, embedded_checkpoint
from ovseg.model_zoo.sam_release import OFFICIAL_TAG, official_checkpoint_path
from ovseg.models.decoders.sam_build import (
    OFFICIAL_CHECKPOINTS,
    missing_official_checkpoint,
)

__all__ = ["OFFICIAL_TAG", "official_checkpoint_path", "resolve_sam_checkpoint"]


def find_cached_checkpoint(
    file: str, url: str, missing: Callable[[Path], WeightsNotFoundError]
) -> Path:
    """``<torch hub dir>/checkpoints/<file>``, downloaded from ``url`` first when it is absent
    and the network is allowed; else ``missing(path)`` is raised with the reason appended."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / file
    if path.is_file():
        return path
    try:
        return download_url(url, path)  # once, after a quick check of the host
    except WeightsNotFoundError as exc:
        reason = str(exc)
    err = missing(path)
    raise WeightsNotFoundError(f"{err} ({reason}; ovseg also looks for it at {path}.)")


def resolve_checkpoint_file(
    checkpoint: str | os.PathLike | None,
    released_file: str | None,
    url: str | None,
    missing: Callable[[Path | str], WeightsNotFoundError],
) -> Path:
    """``checkpoint`` when given (it must exist), else the released file ``released_file`` in
    torch hub's checkpoint folder (downloaded from ``url`` first when the network is allowed);
    ``missing(path)`` is the error raised when neither is there."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise missing(path)
        return path
    if released_file is None or url is None:
        raise missing("(none given)")
    return find_cached_checkpoint(released_file, url, missing)


def find_official_checkpoint(model_type: str) -> Path:
    """The cached official checkpoint, downloaded first when missing and the network is allowed.

    Raises:
        WeightsNotFoundError: absent, and offline or the download failed (the message names
            the file, where it is published and where to put it).
    """
    entry = OFFICIAL_CHECKPOINTS[model_type]
    return find_cached_checkpoint(
        entry["file"], entry["url"], lambda path: missing_official_checkpoint(model_type, path)
    )


def resolve_sam_checkpoint(
    model_name: str,
    checkpoint: str | os.PathLike | None,
    pretrained: str | None,
) -> Path:
    """The weight file for a SAM of registered name ``model_name`` ("custom" for configs).

    ``checkpoint`` (a path) and ``pretrained`` (a tag) are exclusive. With neither, official
    architectures use ``"sa1b"``; other architectures need one of them.
    """
    if checkpoint is not None and pretrained is not None:
        raise ConfigError("Pass either checkpoint=PATH or pretrained=TAG for SAM, not both.")
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise missing_official_checkpoint(model_name, path)
        return path
    tag = pretrained
    if tag is None:
        if model_name not in OFFICIAL_CHECKPOINTS:
            raise WeightsNotFoundError(
                f"SAM {model_name!r} has no default weights. Pass checkpoint=PATH (for example "
                "the model_final.safetensors of `ovseg train configs/sam/shapes_tiny_sam.yaml`) "
                "or a packaged tag as pretrained=TAG."
            )
        tag = OFFICIAL_TAG
    packaged = embedded_checkpoint(model_name, tag)
    if packaged is not None:
        return packaged
    if tag == OFFICIAL_TAG and model_name in OFFICIAL_CHECKPOINTS:
        return find_official_checkpoint(model_name)
    known = sorted(t for (name, t) in EMBEDDED_WEIGHTS if name == model_name)
    if model_name in OFFICIAL_CHECKPOINTS:
        known.append(OFFICIAL_TAG)
    raise WeightsNotFoundError(
        f"No SAM weights {model_name!r} / {tag!r} are known. Tags for {model_name!r}: "
        f"{', '.join(known) or 'none'}; or pass checkpoint=PATH to a local file (train the small "
        "model with `ovseg train configs/sam/shapes_tiny_sam.yaml`)."
    )
