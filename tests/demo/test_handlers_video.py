"""The video handler of the demo on a synthetic clip (8 frames, 64 px) with the shapes-tiny
preset (per-frame re-detection): outputs, tracks table, the byte and frame budget."""

from __future__ import annotations

import av
import numpy as np
import pytest

import ovseg
from ovseg.data.synthetic_video import generate_clip
from ovseg.demo.handlers import (
    VIDEO_HEADERS,
    PipelineProvider,
    VideoHandler,
    VideoPipelines,
)
from ovseg.errors import ConfigError, PromptError, VideoReadError, VideoTooLargeError
from ovseg.io_video import VideoWriter
from ovseg.tracks import read_tracks

FRAMES = 8
# the embedded instance task segments detector boxes: fast enough for 8 frames
FEW_PROPOSALS: list[str] = []


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """An 8-frame, 64 px MP4 of the synthetic video generator and its object names."""
    generated = generate_clip(np.random.default_rng(0), num_frames=FRAMES, image_size=64)
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with VideoWriter(path, fps=8) as writer:
        for frame in generated.frames:
            writer.write(frame)
    return path, [o.name for o in generated.objects]


@pytest.fixture(scope="module")
def handler(one_torch_thread):
    def video(task):
        return ovseg.create_pipeline("shapes-tiny", task=task, overrides=FEW_PROPOSALS)

    return VideoHandler(VideoPipelines(video("video_referring"), video("video_instance")))


def decoded_frames(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_phrase_is_tracked_into_an_overlay_and_a_tracks_file(handler, clip, tmp_path):
    path, names = clip
    out = handler.run(str(path), "Phrase (referring)", f"  {names[0]} ", out_dir=tmp_path)
    assert out.num_frames == FRAMES and out.files == [out.tracks_json, out.overlay]
    assert decoded_frames(out.overlay) == FRAMES
    tracks = read_tracks(out.tracks_json)
    assert tracks.data["task"] == "referring" and tracks.data["query"] == names[0]
    assert tracks.frame_indices == list(range(FRAMES)) and tracks.data["complete"] is True
    assert len(out.table) == len(tracks.tracks) >= 1
    assert all(len(row) == len(VIDEO_HEADERS) for row in out.table)
    for row, track in zip(out.table, tracks.tracks, strict=True):
        assert row[:2] == [track["id"], names[0]]
        assert row[2] == pytest.approx(track["score"], abs=1e-4)
        assert row[3:] == [track["first_frame"], track["last_frame"], len(track["frames"])]
    # every processed frame is counted once over the tracks (one phrase: at most one track a frame)
    assert sum(row[5] for row in out.table) <= FRAMES


def test_a_vocabulary_names_the_tracks_with_its_classes(handler, clip, tmp_path):
    path, names = clip
    out = handler.run(str(path), "instance", ", ".join(names), out_dir=tmp_path)
    tracks = read_tracks(out.tracks_json)
    assert tracks.data["task"] == "instance" and tracks.data["class_names"] == names
    assert {row[1] for row in out.table} <= set(names)
    assert [row[0] for row in out.table] == sorted(t["id"] for t in tracks.tracks)
    assert out.tracks_json.name.endswith("-video-instance_tracks.json")


def test_clips_over_the_budget_are_refused_before_decoding(handler, clip, tmp_path):
    path, names = clip
    small = VideoHandler(VideoPipelines(**handler.pipelines), max_bytes=path.stat().st_size - 1)
    with pytest.raises(
        VideoTooLargeError, match=f"{path.stat().st_size:,} bytes .* more than this demo's cap"
    ):
        small.run(str(path), "referring", names[0], out_dir=tmp_path)
    short = VideoHandler(VideoPipelines(**handler.pipelines), max_frames=FRAMES - 1)
    with pytest.raises(VideoTooLargeError, match=f"{FRAMES} frames, more than the cap of 7"):
        short.run(str(path), "referring", names[0], out_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written


def test_bad_requests_say_what_to_do(handler, clip, tmp_path):
    path, names = clip
    with pytest.raises(VideoReadError, match="No clip given"):
        handler.run(None, "referring", names[0], out_dir=tmp_path)
    with pytest.raises(PromptError, match="phrase is empty"):
        handler.run(str(path), "referring", " ", out_dir=tmp_path)
    with pytest.raises(PromptError, match="Choose one of the modes"):
        handler.run(str(path), "semantic", names[0], out_dir=tmp_path)
    referring_only = VideoHandler(handler.pipelines["referring"])
    assert referring_only.modes == ["Phrase (referring)"]
    with pytest.raises(PromptError, match="not served here"):
        referring_only.run(str(path), "instance", names[0], out_dir=tmp_path)


def test_a_config_without_video_pipelines_is_refused(shapes_tiny):
    with pytest.raises(ConfigError, match="needs a video pipeline"):
        VideoHandler(shapes_tiny)  # an image pipeline
    bare = {"pipeline": {"type": "SemanticSegmenter"}, "vocabulary": ["a"]}
    with pytest.raises(ConfigError, match="No video pipeline"):
        PipelineProvider(bare).get("video")
