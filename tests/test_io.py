"""Tests for ovseg.io: every pixel mode, EXIF, pixel caps, broken inputs, atomic writes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from ovseg.errors import ImageReadError, ImageTooLargeError
from ovseg.io import (
    DEFAULT_MAX_PIXELS,
    read_image,
    read_label_png,
    write_png_atomic,
)


def _save(im: Image.Image, path: Path, fmt: str, **kw) -> Path:
    im.save(path, format=fmt, **kw)
    return path


def _encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _check_rgb(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (*shape, 3)
    assert out.flags.c_contiguous and out.flags.writeable


# ---------------------------------------------------------------------------------------------
# Pixel modes
# ---------------------------------------------------------------------------------------------


def test_default_cap_matches_pillow_default():
    assert DEFAULT_MAX_PIXELS == 89_478_485


def test_rgb_png_file_and_bytes(tmp_path):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    path = _save(Image.fromarray(rgb), tmp_path / "a.png", "PNG")
    for src in (path, str(path), path.read_bytes(), bytearray(path.read_bytes())):
        out = read_image(src)
        _check_rgb(out, (2, 3))
        np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(read_image(memoryview(path.read_bytes())), rgb)


def test_mode_L(tmp_path):
    path = _save(Image.new("L", (3, 2), 77), tmp_path / "l.png", "PNG")
    out = read_image(path)
    _check_rgb(out, (2, 3))
    assert (out == 77).all()


def test_mode_LA_drops_alpha(tmp_path):
    path = _save(Image.new("LA", (3, 2), (100, 0)), tmp_path / "la.png", "PNG")
    out = read_image(path)
    _check_rgb(out, (2, 3))
    assert (out == 100).all()  # not composited over white (which would give 255)


def test_mode_RGBA_drops_alpha(tmp_path):
    path = _save(Image.new("RGBA", (3, 2), (10, 20, 30, 0)), tmp_path / "rgba.png", "PNG")
    out = read_image(path)
    _check_rgb(out, (2, 3))
    assert out[0, 0].tolist() == [10, 20, 30]


def _palette_image() -> Image.Image:
    im = Image.new("P", (4, 2), 0)
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0, 0, 0] * 253)
    im.putpixel((1, 0), 1)
    im.putpixel((2, 1), 2)
    return im


def test_mode_P_without_transparency(tmp_path):
    path = _save(_palette_image(), tmp_path / "p.png", "PNG")
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" not in check.info
    out = read_image(path)
    _check_rgb(out, (2, 4))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [0, 255, 0]
    assert out[1, 2].tolist() == [0, 0, 255]


def test_mode_P_with_transparency(tmp_path):
    path = _save(_palette_image(), tmp_path / "pt.png", "PNG", transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and check.info.get("transparency") is not None
    out = read_image(path)
    _check_rgb(out, (2, 4))
    assert out[0, 0].tolist() == [255, 0, 0]  # transparent index keeps its colour
    assert out[0, 1].tolist() == [0, 255, 0]


def test_mode_CMYK(tmp_path):
    path = _save(Image.new("CMYK", (3, 2), (0, 255, 255, 0)), tmp_path / "c.tif", "TIFF")
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    out = read_image(path)
    _check_rgb(out, (2, 3))
    assert out[0, 0].tolist() == [255, 0, 0]


def test_mode_CMYK_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (16, 16), (0, 0, 0, 0)), tmp_path / "c.jpg", "JPEG")
    out = read_image(path)
    _check_rgb(out, (16, 16))
    assert out.min() >= 250  # no ink -> white


_U16 = np.array([[0, 255, 256, 32768], [40000, 65280, 65534, 65535]], dtype=np.uint16)
_U16_EXPECTED = (_U16 >> 8).astype(np.uint8)


def test_mode_I16_png_scaled_by_full_range(tmp_path):
    path = _save(Image.fromarray(_U16), tmp_path / "g16.png", "PNG")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    out = read_image(path)
    _check_rgb(out, (2, 4))
    np.testing.assert_array_equal(out[..., 0], _U16_EXPECTED)
    np.testing.assert_array_equal(out[..., 2], _U16_EXPECTED)
    assert out[1, 3, 0] == 255 and out[0, 1, 0] == 0  # scaled, not clipped


def test_mode_I16B(tmp_path):
    im = Image.frombytes("I;16B", (4, 2), _U16.astype(">u2").tobytes())
    path = _save(im, tmp_path / "g16b.tif", "TIFF")
    with Image.open(path) as check:
        assert check.mode == "I;16B"
    np.testing.assert_array_equal(read_image(path)[..., 1], _U16_EXPECTED)
    np.testing.assert_array_equal(read_image(im)[..., 1], _U16_EXPECTED)


def test_mode_I_with_16bit_values(tmp_path):
    im = Image.fromarray(_U16.astype(np.int32))
    assert im.mode == "I"
    path = _save(im, tmp_path / "i.tif", "TIFF")
    np.testing.assert_array_equal(read_image(path)[..., 0], _U16_EXPECTED)


def test_mode_I_with_32bit_values():
    vals = np.array([[-(2**31), 0, 2**31 - 1]], dtype=np.int32)
    out = read_image(Image.fromarray(vals))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_mode_F(tmp_path):
    im = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert im.mode == "F"
    path = _save(im, tmp_path / "f.tif", "TIFF")
    assert read_image(path)[0, :, 0].tolist() == [0, 128, 255]
    bad = Image.fromarray(np.array([[0.0, 2.0]], dtype=np.float32))
    with pytest.raises(ImageReadError, match=r"\[0, 1\]"):
        read_image(bad)


def test_mode_1(tmp_path):
    im = Image.new("1", (3, 2), 0)
    im.putpixel((1, 1), 1)
    path = _save(im, tmp_path / "bw.png", "PNG")
    out = read_image(path)
    _check_rgb(out, (2, 3))
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [0, 0, 0]


def test_multiframe_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])
    out = read_image(path)
    _check_rgb(out, (4, 4))
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


# ---------------------------------------------------------------------------------------------
# EXIF orientation
# ---------------------------------------------------------------------------------------------


def _oriented_jpeg(path: Path) -> Path:
    """A 32-wide, 16-tall JPEG: left half red, right half blue, EXIF orientation 6."""
    arr = np.zeros((16, 32, 3), dtype=np.uint8)
    arr[:, :16] = (255, 0, 0)
    arr[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(arr).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def _assert_rotated_cw(out: np.ndarray) -> None:
    _check_rgb(out, (32, 16))  # height and width swapped
    top, bottom = out[4, 8], out[28, 8]
    assert top[0] > 200 and top[2] < 60  # the stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_exif_orientation_file_bytes_and_pil(tmp_path):
    path = _oriented_jpeg(tmp_path / "rot.jpg")
    _assert_rotated_cw(read_image(path))
    _assert_rotated_cw(read_image(path.read_bytes()))
    with Image.open(path) as im:
        assert im.size == (32, 16)
        _assert_rotated_cw(read_image(im))
        assert im.size == (32, 16)  # the caller's image is not modified


# ---------------------------------------------------------------------------------------------
# Pixel cap
# ---------------------------------------------------------------------------------------------


def test_cap_checked_from_header_before_decoding(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (100, 50), (1, 2, 3)), tmp_path / "big.png", "PNG")

    def no_decode(self):  # decoding must not start for an image above the cap
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageTooLargeError) as info:
        read_image(path, max_pixels=4999)
    msg = str(info.value)
    assert "100x50" in msg and "5,000" in msg and "max_pixels" in msg and "None" in msg
    assert str(path) in msg


def test_cap_for_arrays_and_pil():
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        read_image(np.zeros((10, 10, 3), np.uint8), max_pixels=99)
    with pytest.raises(ImageTooLargeError):
        read_image(Image.new("RGB", (10, 10)), max_pixels=99)
    assert read_image(np.zeros((10, 10, 3), np.uint8), max_pixels=100).shape == (10, 10, 3)


def _png_with_header_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims ``width`` x ``height`` (a decompression bomb header)."""
    data = bytearray(_encoded(Image.new("L", (1, 1)), "PNG"))
    ihdr_start = 8 + 8  # signature, then chunk length + type
    data[ihdr_start : ihdr_start + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr_start + 13]))
    data[ihdr_start + 13 : ihdr_start + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_pillow_bomb_error_becomes_image_too_large():
    bomb = _png_with_header_size(50_000, 50_000)  # 2.5e9 pixels, beyond 2x Pillow's limit
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        read_image(bomb)


def test_raised_cap_overrides_pillow_limit_and_restores_it(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow alone would reject 8x8
    path = _save(Image.new("RGB", (8, 8), (5, 6, 7)), tmp_path / "s.png", "PNG")
    assert read_image(path, max_pixels=None)[0, 0].tolist() == [5, 6, 7]
    assert read_image(path, max_pixels=64).shape == (8, 8, 3)
    assert Image.MAX_IMAGE_PIXELS == 10


# ---------------------------------------------------------------------------------------------
# Broken inputs
# ---------------------------------------------------------------------------------------------


def _noise(h: int = 64, w: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt,name", [("PNG", "cut.png"), ("JPEG", "cut.jpg")])
@pytest.mark.parametrize("tolerant_pillow", [False, True])
def test_truncated_files_raise(tmp_path, monkeypatch, fmt, name, tolerant_pillow):
    # Another library may have switched Pillow to "load truncated images": we must still refuse.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", tolerant_pillow)
    data = _encoded(_noise(), fmt)
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt") as info:
        read_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(ImageReadError):
        read_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is tolerant_pillow  # restored


def test_garbage_bytes_and_file(tmp_path):
    garbage = np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes()
    with pytest.raises(ImageReadError, match="not an image format"):
        read_image(garbage)
    path = tmp_path / "junk.jpg"
    path.write_bytes(garbage)
    with pytest.raises(ImageReadError, match="junk.jpg"):
        read_image(path)


def test_empty_inputs(tmp_path):
    with pytest.raises(ImageReadError, match="empty"):
        read_image(b"")
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(path)


def test_missing_path_and_directory(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageReadError, match="does not exist") as info:
        read_image(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


def test_unsupported_source_type():
    with pytest.raises(ImageReadError, match="numpy array"):
        read_image(12345)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# numpy and PIL inputs
# ---------------------------------------------------------------------------------------------


def test_numpy_float_in_unit_range():
    arr = np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32)
    assert read_image(arr)[0, 0].tolist() == [0, 128, 255]
    with pytest.raises(ImageReadError, match="Divide 0-255"):
        read_image(arr * 255)
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(np.full((2, 2), np.nan))


def test_numpy_uint16_bool_gray_and_alpha():
    np.testing.assert_array_equal(read_image(_U16)[..., 0], _U16_EXPECTED)
    mask = np.array([[True, False]])
    assert read_image(mask)[0, :, 0].tolist() == [255, 0]
    gray = np.full((2, 2, 1), 9, np.uint8)
    assert (read_image(gray) == 9).all()
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (1, 2, 3)
    assert read_image(rgba)[1, 1].tolist() == [1, 2, 3]
    ints = np.array([[0, 200]], dtype=np.int64)
    assert read_image(ints)[0, :, 0].tolist() == [0, 200]
    with pytest.raises(ImageReadError, match="outside"):
        read_image(np.array([[-1, 3]], dtype=np.int64))


def test_numpy_output_is_a_contiguous_copy():
    arr = np.zeros((4, 6, 3), np.uint8)[:, ::2]  # non-contiguous view
    out = read_image(arr)
    _check_rgb(out, (4, 3))
    out[0, 0, 0] = 99
    assert arr[0, 0, 0] == 0


def test_numpy_bad_shapes():
    with pytest.raises(ImageReadError, match="channel-first"):
        read_image(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ImageReadError, match="no pixels"):
        read_image(np.zeros((0, 8, 3), np.uint8))
    with pytest.raises(ImageReadError):
        read_image(np.zeros((8,), np.uint8))


def test_pil_input():
    rgb = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    out = read_image(im)
    _check_rgb(out, (5, 7))
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(read_image(im.convert("RGBA")), rgb)


# ---------------------------------------------------------------------------------------------
# Label maps
# ---------------------------------------------------------------------------------------------


def test_read_label_png_keeps_indices(tmp_path):
    pal = _save(_palette_image(), tmp_path / "lab_p.png", "PNG")
    out = read_label_png(pal)
    assert out.dtype == np.uint8 and out.shape == (2, 4)
    assert out[0, 1] == 1 and out[1, 2] == 2 and out[0, 0] == 0

    gray = np.array([[0, 3], [150, 255]], dtype=np.uint8)
    out = read_label_png(_save(Image.fromarray(gray), tmp_path / "lab_l.png", "PNG"))
    np.testing.assert_array_equal(out, gray)

    wide = np.array([[0, 300], [1000, 65535]], dtype=np.uint16)
    out = read_label_png(_save(Image.fromarray(wide), tmp_path / "lab_16.png", "PNG"))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, wide.astype(np.int32))


def test_read_label_png_rejects_colour_and_jpeg(tmp_path):
    same = Image.fromarray(np.stack([np.full((2, 2), 7, np.uint8)] * 3, axis=2))
    assert (read_label_png(_save(same, tmp_path / "same.png", "PNG")) == 7).all()
    colour = Image.new("RGB", (2, 2), (1, 2, 3))
    with pytest.raises(ImageReadError, match="not an index map"):
        read_label_png(_save(colour, tmp_path / "colour.png", "PNG"))
    with pytest.raises(ImageReadError, match="JPEG"):
        read_label_png(_save(Image.new("L", (8, 8)), tmp_path / "lab.jpg", "JPEG"))
    with pytest.raises(ImageReadError, match="does not exist"):
        read_label_png(tmp_path / "missing.png")


# ---------------------------------------------------------------------------------------------
# Atomic writing
# ---------------------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_write_png_atomic_round_trips(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    path = write_png_atomic(rgb, tmp_path / "sub" / "rgb.png")
    np.testing.assert_array_equal(read_image(path), rgb)

    labels = np.array([[0, 1], [300, 65535]], dtype=np.int64)
    write_png_atomic(labels, tmp_path / "lab.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "lab.png"), labels)

    small = np.array([[0, 5]], dtype=np.uint8)
    write_png_atomic(small, tmp_path / "small.png")
    assert read_label_png(tmp_path / "small.png").dtype == np.uint8

    write_png_atomic(np.array([[True, False]]), tmp_path / "mask.png")
    assert read_label_png(tmp_path / "mask.png").tolist() == [[1, 0]]

    write_png_atomic(_palette_image(), tmp_path / "pal.png")
    assert read_label_png(tmp_path / "pal.png")[1, 2] == 2

    with pytest.raises(ValueError, match="16-bit"):
        write_png_atomic(np.array([[70000]], dtype=np.int64), tmp_path / "x.png")
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub") == []
    assert not (tmp_path / "x.png").exists()


def test_write_png_atomic_keeps_old_file_when_saving_fails(tmp_path, monkeypatch):
    path = write_png_atomic(np.full((2, 2), 1, np.uint8), tmp_path / "keep.png")
    before = path.read_bytes()

    def broken_save(self, fp, format=None, **params):
        Path(fp).write_bytes(b"\x89PNG half written")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_png_atomic(np.full((2, 2), 2, np.uint8), path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
