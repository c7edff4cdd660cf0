"""Hardened image reading and atomic file writing.

Every image that enters ovseg goes through :func:`read_image`, which returns an ``(H, W, 3)``
``uint8`` RGB array in C order, whatever the source (file, encoded bytes, PIL image or numpy
array) and whatever the pixel mode.  Failures are typed: :class:`~ovseg.errors.ImageReadError`
for anything that cannot be decoded completely, :class:`~ovseg.errors.ImageTooLargeError` for
images above the pixel cap.  Nothing returns ``None`` or a partially decoded (grey) image.

Conversion rules (documented once, applied everywhere):

* EXIF orientation is applied to files, bytes and PIL images, so arrays are upright as a viewer
  shows them.
* Alpha is dropped, not composited: RGBA/LA/PA and palette images with transparency keep the
  colour stored under transparent pixels.
* 16-bit samples are scaled by their full range (``value >> 8``; 65535 -> 255), never clipped.
* 32-bit integer images (mode ``I``) whose values all lie in ``[0, 65535]`` are treated as 16-bit
  samples (Pillow stores some 16-bit files this way); other values map linearly from the int32
  range onto ``[0, 255]``.
* Float images (mode ``F`` or float arrays) must hold values in ``[0, 1]``; they are scaled by 255
  and rounded.  Other float ranges raise, since guessing the scale silently gives wrong colours.
* CMYK is converted with Pillow's plain formula (embedded ICC profiles are ignored).
* Multi-frame files (GIF, TIFF) give their first frame.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ovseg.errors import ImageReadError, ImageTooLargeError
from ovseg.fileio import atomic_path

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageSource",
    "read_image",
    "read_label_png",
    "write_png_atomic",
]

#: Default pixel cap, equal to Pillow's own default ``Image.MAX_IMAGE_PIXELS``.
DEFAULT_MAX_PIXELS: int = 89_478_485

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray

# Pillow's decompression-bomb limit and truncated-image switch are module globals.  We only
# touch them (under this lock) when the caller's settings need it; the default path never does.
_PIL_GLOBALS_LOCK = threading.Lock()

_UINT16_MAX = 65535


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"image file '{os.fspath(source)}'"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"encoded image ({len(memoryview(source).cast('B'))} bytes)"
    if isinstance(source, Image.Image):
        return f"PIL image (mode {source.mode}, size {source.size[0]}x{source.size[1]})"
    if isinstance(source, np.ndarray):
        return f"numpy array (shape {source.shape}, dtype {source.dtype})"
    return f"object of type {type(source).__name__}"


def _check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is None:
        return
    pixels = int(width) * int(height)
    if pixels > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} = {pixels:,} pixels, more than the cap of "
            f"{max_pixels:,} pixels (a guard against decompression bombs). If you trust this "
            f"image, pass max_pixels={pixels} or larger to read_image(), or max_pixels=None to "
            "disable the cap."
        )


@contextlib.contextmanager
def _pil_guards(max_pixels: int | None) -> Iterator[None]:
    """Make our cap the only size limit and refuse truncated data, whatever Pillow's globals say.

    Pillow's own bomb check would reject images that our (possibly larger) cap allows, and
    ``ImageFile.LOAD_TRUNCATED_IMAGES = True`` (set by some other library) would make truncated
    files decode silently into grey.  Only in those cases are the globals changed, under a lock.
    """
    pil_cap = Image.MAX_IMAGE_PIXELS
    lift_cap = pil_cap is not None and (max_pixels is None or max_pixels > pil_cap)
    strict = ImageFile.LOAD_TRUNCATED_IMAGES
    if not lift_cap and not strict:
        yield
        return
    with _PIL_GLOBALS_LOCK:
        saved_cap, saved_trunc = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        if lift_cap:
            Image.MAX_IMAGE_PIXELS = None
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved_cap
            ImageFile.LOAD_TRUNCATED_IMAGES = saved_trunc


def _too_large_from_pil(err: Exception, what: str) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{what} exceeds Pillow's decompression-bomb limit ({err}). If you trust this image, "
        "pass a larger max_pixels to read_image(), or max_pixels=None to disable the cap."
    )


def _open_decoded(source: Any, max_pixels: int | None, what: str) -> tuple[Image.Image, str | None]:
    """Open ``source`` (path or bytes), check the size from the header, decode fully.

    Returns ``(image, format)``: a loaded, EXIF-upright PIL image detached from the file, and
    the file format Pillow detected (``"PNG"``, ``"JPEG"`` ...).  The whole decode happens
    inside the try so that any decoder failure becomes :class:`ImageReadError`.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise ImageReadError(f"{what} does not exist; check the path and that it is mounted.")
        if path.is_dir():
            raise ImageReadError(f"{what} is a directory; pass the path of an image file.")
        if path.stat().st_size == 0:
            raise ImageReadError(f"{what} is empty (0 bytes); re-copy or re-download it.")
        opener: Any = path
    else:
        data = memoryview(source).cast("B")
        if len(data) == 0:
            raise ImageReadError(f"{what} is empty; pass the bytes of an encoded image.")
        opener = io.BytesIO(data.tobytes())

    try:
        with _pil_guards(max_pixels):
            with Image.open(opener) as im:  # lazy: only the header is read here
                _check_pixels(im.size[0], im.size[1], max_pixels, what)
                im.load()  # full decode; raises on truncated or corrupt data
                # exif_upright returns a new image, detached from the file that closes below.
                return _exif_upright(im), im.format
    except (ImageTooLargeError, ImageReadError):
        raise
    except Image.DecompressionBombError as err:
        raise _too_large_from_pil(err, what) from err
    except FileNotFoundError as err:  # removed between the checks above and the open
        raise ImageReadError(f"{what} does not exist; check the path.") from err
    except PermissionError as err:
        raise ImageReadError(f"{what} cannot be read ({err}); check its permissions.") from err
    except UnidentifiedImageError as err:
        raise ImageReadError(
            f"{what} is not an image format Pillow can read (garbage, or an unsupported "
            "format); check the file, or convert it to PNG/JPEG."
        ) from err
    except MemoryError:
        raise
    except Exception as err:
        raise ImageReadError(
            f"{what} could not be decoded completely ({type(err).__name__}: {err}); the file is "
            "probably truncated or corrupt. Re-copy or re-download it."
        ) from err


def _exif_upright(im: Image.Image) -> Image.Image:
    """A new image with the EXIF orientation applied (a plain copy when there is none)."""
    try:
        out = ImageOps.exif_transpose(im)
    except Exception as err:  # a broken EXIF block should not make a good image unreadable
        warnings.warn(
            f"ignoring unreadable EXIF orientation ({type(err).__name__}: {err}); the image is "
            "used as stored",
            stacklevel=3,
        )
        return im.copy()
    return im.copy() if out is None else out


def _float_to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ImageReadError(f"{what} contains NaN or infinite values; clean the data first.")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < 0.0 or hi > 1.0:
        raise ImageReadError(
            f"{what} holds float values in [{lo:g}, {hi:g}], but float images must lie in "
            "[0, 1]. Divide 0-255 data by 255 (or pass it as uint8)."
        )
    return np.rint(arr * 255.0).astype(np.uint8)


def _int_to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """Integer array samples -> uint8.

    ``uint8`` as is; ``uint16`` by ``>> 8``; other integer dtypes as 8-bit when all values fit
    ``[0, 255]`` and as 16-bit (``>> 8``) when they fit ``[0, 65535]``; anything else raises.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if 0 <= lo and hi <= 255:
        return arr.astype(np.uint8)
    if 0 <= lo and hi <= _UINT16_MAX:
        return (arr.astype(np.uint32) >> 8).astype(np.uint8)
    raise ImageReadError(
        f"{what} holds integers in [{lo}, {hi}], outside the 8-bit and 16-bit ranges; rescale "
        "it to uint8 (0-255) or uint16 first."
    )


def _mode_i_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Pillow mode ``I`` (int32) -> uint8: 16-bit rule inside [0, 65535], else int32 range."""
    wide = arr.astype(np.int64)
    if wide.size == 0 or (int(wide.min()) >= 0 and int(wide.max()) <= _UINT16_MAX):
        return (wide >> 8).astype(np.uint8)
    return ((wide + 2**31) >> 24).astype(np.uint8)  # [-2**31, 2**31) -> [0, 256)


def _pil_to_rgb_array(im: Image.Image, what: str) -> np.ndarray:
    """A loaded PIL image of any mode -> (H, W, 3) uint8 RGB (alpha dropped)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im)
        if arr.ndim != 2:
            raise ImageReadError(f"{what} has an unexpected layout for mode {mode}.")
        if mode == "F":
            gray = _float_to_uint8(arr, what)
        elif mode.startswith("I;16"):
            gray = (arr.astype(np.uint16) >> 8).astype(np.uint8)  # also fixes big-endian data
        else:
            gray = _mode_i_to_uint8(arr)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))

    if mode in ("P", "PA"):
        # Dropping alpha: go through RGBA so transparency is honoured by Pillow, then discard it.
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA").convert("RGB") if has_alpha else im.convert("RGB")
    elif mode != "RGB":
        try:
            im = im.convert("RGB")
        except Exception as err:
            raise ImageReadError(
                f"{what} has pixel mode {mode!r}, which cannot be converted to RGB; convert it "
                "to RGB (e.g. save it as PNG) first."
            ) from err
    arr = np.array(im, dtype=np.uint8)  # copy: Pillow's array view is read-only
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageReadError(f"{what} decoded to an unexpected shape {arr.shape}.")
    return np.ascontiguousarray(arr)


def _array_to_rgb(arr: np.ndarray, max_pixels: int | None) -> np.ndarray:
    what = _describe(arr)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        h, w = arr.shape[:2]
    elif arr.ndim == 2:
        h, w = arr.shape
    else:
        hint = ""
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
            hint = " It looks channel-first (CHW): pass arr.transpose(1, 2, 0)."
        raise ImageReadError(
            f"{what} is not an image array; expected (H, W), (H, W, 1), (H, W, 3) or "
            f"(H, W, 4).{hint}"
        )
    if h == 0 or w == 0:
        raise ImageReadError(f"{what} has no pixels.")
    _check_pixels(w, h, max_pixels, what)

    if arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * np.uint8(255)
    elif arr.dtype.kind == "f":
        out = _float_to_uint8(arr, what)
    elif arr.dtype.kind in "iu":
        out = _int_to_uint8(arr, what)
    else:
        raise ImageReadError(
            f"{what} has an unsupported dtype; use uint8, uint16, bool or float in [0, 1]."
        )
    if out.ndim == 2:
        out = out[:, :, None]
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[2] == 4:
        out = out[:, :, :3]  # alpha dropped, as for files
    return np.array(out, dtype=np.uint8, order="C", copy=True)  # never alias the caller's array


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def read_image(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image from any supported source as an ``(H, W, 3)`` ``uint8`` RGB array.

    Args:
        source: a path (``str`` / ``os.PathLike``), encoded image bytes (``bytes``,
            ``bytearray``, ``memoryview``), a ``PIL.Image.Image``, or a numpy array of shape
            ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` with dtype ``uint8``,
            ``uint16`` (scaled by ``>> 8``), ``bool`` (0/255) or float in ``[0, 1]``.  Other
            integer dtypes are accepted when their values fit 0-255 or 0-65535.
        max_pixels: refuse images with more than this many pixels (``W * H``); checked from the
            file header before any pixel data is decoded.  ``None`` disables the cap.

    Pillow's own limits are module globals.  When ``max_pixels`` is above
    ``PIL.Image.MAX_IMAGE_PIXELS`` (or ``None``), or some other code has set
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True``, they are overridden for the duration of the
    decode under a lock, so this cap is the only size limit and truncated data always raises.
    With the defaults nothing global is touched.

    Returns:
        A new, writable, C-contiguous ``np.uint8`` array of shape ``(H, W, 3)``, RGB order,
        EXIF orientation applied, alpha dropped (see the module docstring for every rule).

    Raises:
        ImageTooLargeError: the image has more than ``max_pixels`` pixels.
        ImageReadError: missing path, directory, empty/garbage/truncated data, unsupported
            mode, dtype or shape.
    """
    if max_pixels is not None and max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive or None, got {max_pixels}")
    what = _describe(source)

    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, max_pixels)

    if isinstance(source, Image.Image):
        _check_pixels(source.size[0], source.size[1], max_pixels, what)
        try:
            with _pil_guards(max_pixels):
                source.load()
        except Image.DecompressionBombError as err:
            raise _too_large_from_pil(err, what) from err
        except Exception as err:
            raise ImageReadError(
                f"{what} could not be decoded completely ({type(err).__name__}: {err}); the "
                "underlying file is probably truncated or corrupt."
            ) from err
        return _pil_to_rgb_array(_exif_upright(source), what)

    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        im, _ = _open_decoded(source, max_pixels, what)
        return _pil_to_rgb_array(im, what)

    raise ImageReadError(
        f"cannot read an image from an {what}; pass a path, encoded bytes, a PIL image or a "
        "numpy array."
    )


def read_label_png(
    path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Read a label map (class index per pixel) without any colour conversion.

    Modes ``L`` and ``P`` give their stored indices (palette colours are ignored), ``1`` gives
    0/1; all as ``(H, W)`` ``uint8``.  Modes ``I`` and ``I;16*`` give ``(H, W)`` ``int32``.  An
    RGB file whose three channels are equal is read as its first channel (``uint8``); any other
    RGB/alpha mode raises, since colours are not indices.  EXIF orientation is applied, as in
    :func:`read_image`, so labels stay aligned with their images.  Lossy JPEG labels are refused.

    Raises:
        ImageReadError / ImageTooLargeError: as :func:`read_image`, plus non-index modes.
    """
    what = _describe(path)
    if not isinstance(path, (str, os.PathLike)):
        raise ImageReadError(f"read_label_png() needs a file path, got an {what}.")
    im, fmt = _open_decoded(path, max_pixels, what)
    if fmt == "JPEG":
        raise ImageReadError(
            f"{what} is a JPEG; lossy compression corrupts class indices. Store labels as PNG."
        )
    mode = im.mode
    if mode in ("L", "P"):
        out = np.array(im, dtype=np.uint8)
    elif mode == "1":
        out = np.array(im, dtype=np.uint8)  # Pillow gives bool; 0/1 as uint8
    elif mode == "I" or mode.startswith("I;16"):
        out = np.asarray(im).astype(np.int32)
    elif mode == "RGB":
        rgb = np.asarray(im)
        if not (
            np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        ):
            raise ImageReadError(
                f"{what} is a colour (RGB) image, not an index map; convert colours to class "
                "indices and save as a mode L, P or I PNG."
            )
        out = np.array(rgb[..., 0], dtype=np.uint8)
    else:
        raise ImageReadError(
            f"{what} has mode {mode!r}; label maps must be single-channel index images (mode L, "
            "P, I or I;16). Save the indices without alpha/colour."
        )
    return np.ascontiguousarray(out)


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        if arr.dtype != np.uint8:
            raise ValueError(f"colour PNGs need uint8 data, got {arr.dtype}")
        return Image.fromarray(np.ascontiguousarray(arr))  # uint8 HW3 -> RGB, HW4 -> RGBA
    if arr.ndim != 2:
        raise ValueError(
            f"cannot write an array of shape {arr.shape} as PNG; expected HW, HW1, HW3 or HW4"
        )
    if arr.dtype == np.bool_:
        return Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8) * 255)).convert("1")
    if arr.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(arr))  # uint8 HW -> L
    if arr.dtype.kind in "iu":
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > _UINT16_MAX):
            raise ValueError(
                f"integer values in [{int(arr.min())}, {int(arr.max())}] do not fit a 16-bit PNG"
            )
        data = np.ascontiguousarray(arr.astype("<u2"))
        return Image.frombytes("I;16", (arr.shape[1], arr.shape[0]), data.tobytes())
    raise ValueError(f"cannot write dtype {arr.dtype} as PNG; use uint8, uint16/int labels or bool")


def write_png_atomic(
    image: np.ndarray | Image.Image, path: str | os.PathLike, *, durable: bool = True
) -> Path:
    """Write ``image`` as a PNG at ``path`` atomically (temp file in the same folder + rename).

    Accepted arrays: ``(H, W, 3)`` / ``(H, W, 4)`` ``uint8`` (RGB / RGBA); ``(H, W)`` or
    ``(H, W, 1)`` ``uint8`` (mode L), other integer dtypes with values in ``[0, 65535]``
    (16-bit PNG, read back by :func:`read_label_png` as ``int32``), ``bool`` (1-bit PNG).
    PIL images are written in their own mode.  ``durable=False`` skips the fsyncs (bulk files).
    Returns the final path.
    """
    pil = image if isinstance(image, Image.Image) else _array_to_pil(np.asarray(image))
    target = Path(path)
    with atomic_path(target, durable=durable) as tmp:
        pil.save(tmp, format="PNG")
    return target
