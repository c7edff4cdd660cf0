"""Atomic file writes: a temporary name in the target folder, then a rename into place.

A reader never sees a half-written file under the final name; an exception while writing
removes the temporary file. Bulk files (thousands of images) skip fsync for speed: the rename
still makes them appear whole or not at all. Index files (JSON, CSV, class lists) pass
``durable=True`` and go through ``ovseg.io.atomic_path``, which also fsyncs file and folder.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from ovseg.io import atomic_path


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; ``durable`` also fsyncs (use for index files)."""
    if durable:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return Path(path)
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and durably (an index or list file)."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=True)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None) -> Path:
    """Serialise ``obj`` as JSON and write it to ``path`` atomically and durably."""
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def encode_image(array: np.ndarray, fmt: str, **save_kwargs: Any) -> bytes:
    """Encode an HWC uint8 RGB or HW uint8 array as ``fmt`` ("JPEG", "PNG") bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format=fmt, **save_kwargs)
    return buf.getvalue()


def save_jpeg(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> Path:
    """Save an HWC uint8 RGB image as JPEG atomically.

    Chroma is not subsampled (4:4:4): the synthetic world's per-pixel colour noise and small
    coloured objects lose much more to 4:2:0 (mean error ~7 vs ~3 grey levels at quality 95).
    """
    return atomic_write_bytes(path, encode_image(image, "JPEG", quality=quality, subsampling=0))


def save_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save an HW uint8 (e.g. a label map) or HWC uint8 array as PNG atomically."""
    return atomic_write_bytes(path, encode_image(array, "PNG"))
