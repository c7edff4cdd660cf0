"""Frame sources and the MP4 writer: streaming, timestamps, ranges, budgets, typed errors."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from ovseg.errors import ConfigError, VideoReadError, VideoTooLargeError
from ovseg.fileio import save_jpeg
from ovseg.io_video import (
    FolderFrameSource,
    PyAVFrameSource,
    VideoWriter,
    is_video_input,
    open_video,
)


def _frames(count: int, height: int = 32, width: int = 48) -> list[np.ndarray]:
    """Frames whose mean grey level encodes their index (survives lossy coding)."""
    return [np.full((height, width, 3), 20 + 20 * i, dtype=np.uint8) for i in range(count)]


def _vfr_mp4(path, pts: list[int], time_base: Fraction) -> None:
    """An MP4 with given presentation times (a variable frame rate)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        for i, value in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(_frames(1)[0][:, :32] + 20 * i, format="rgb24")
            frame.pts, frame.time_base = value, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_writer_then_reader_round_trip(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=10) as writer:
        for frame in _frames(6, 31, 45):  # odd sides are padded to even ones
            writer.write(frame)
    assert not list(tmp_path.glob(".*tmp*"))
    source = open_video(path)
    assert isinstance(source, PyAVFrameSource)
    assert (source.info.width, source.info.height) == (46, 32)
    assert source.info.num_frames == 6 and source.info.fps == pytest.approx(10.0)
    frames = list(source.frames())
    assert [f.index for f in frames] == list(range(6))
    assert [f.time for f in frames] == pytest.approx([i / 10 for i in range(6)])
    means = [f.image[:31, :45].mean() for f in frames]
    assert means == pytest.approx([20 + 20 * i for i in range(6)], abs=4)
    resumed = list(source.frames(start=2, stop=6, step=2))
    assert [f.index for f in resumed] == [2, 4]
    assert resumed[0].image.mean() == pytest.approx(frames[2].image.mean())


def test_variable_frame_rate_keeps_presentation_times(tmp_path):
    path = tmp_path / "vfr.mp4"
    _vfr_mp4(path, [0, 100, 150, 400], Fraction(1, 1000))
    times = [f.time for f in open_video(path).frames()]
    assert times == pytest.approx([0.0, 0.1, 0.15, 0.4])


def test_frames_stream_one_at_a_time(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=5) as writer:
        for frame in _frames(4):
            writer.write(frame)
    iterator = open_video(path).frames()
    first = next(iterator)
    assert first.index == 0  # a generator: nothing beyond the current frame was decoded
    assert next(iterator).index == 1


def test_budgets_are_checked_before_decoding(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=5) as writer:
        for frame in _frames(5):
            writer.write(frame)
    with pytest.raises(VideoTooLargeError, match="pixels"):
        open_video(path, max_pixels=100).frames()
    with pytest.raises(VideoTooLargeError, match="5 frames"):
        open_video(path, max_frames=4).frames()
    assert len(list(open_video(path, max_frames=2).frames(start=3))) == 2


def test_damaged_and_unsupported_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(VideoReadError, match="broken.mp4"):
        list(open_video(bad).frames())
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(VideoReadError, match="unsupported video type"):
        open_video(text)
    with pytest.raises(VideoReadError, match="no such"):
        open_video(tmp_path / "absent.mp4")


def test_frame_folder_natural_order_fps_and_errors(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(_frames(3)):
        save_jpeg(folder / f"f{i * 5}.jpg", frame)  # f0, f5, f10: natural, not lexical order
    (folder / ".hidden.jpg").write_bytes(b"x")
    source = open_video(folder, fps=5)
    assert isinstance(source, FolderFrameSource) and is_video_input(folder)
    frames = list(source.frames())
    assert [f.name for f in frames] == ["f0.jpg", "f5.jpg", "f10.jpg"]
    assert [f.time for f in frames] == pytest.approx([0.0, 0.2, 0.4])
    assert [f.index for f in source.frames(start=1)] == [1, 2]
    assert open_video(folder).info.fps is None and next(open_video(folder).frames()).time is None
    save_jpeg(folder / "f20.jpg", _frames(1, 16, 16)[0])
    with pytest.raises(VideoReadError, match="share one size"):
        list(open_video(folder).frames())
    (folder / "f30.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoReadError, match="f30.jpg"):
        list(open_video(folder).frames(start=4))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoReadError, match="no frame image"):
        open_video(empty)


def test_bad_ranges_are_config_errors(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    save_jpeg(folder / "0.jpg", _frames(1)[0])
    source = open_video(folder)
    for kwargs in ({"start": -1}, {"start": 2, "stop": 1}, {"step": 0}):
        with pytest.raises(ConfigError):
            source.frames(**kwargs)


def test_writer_refuses_mixed_sizes_and_leaves_no_file(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(ConfigError):
        with VideoWriter(path) as writer:
            writer.write(_frames(1)[0])
            writer.write(_frames(1, 16, 16)[0])
    assert not path.exists() and not list(tmp_path.iterdir())
