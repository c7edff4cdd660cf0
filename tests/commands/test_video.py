"""``ovseg predict --video`` and ``ovseg eval --video`` end to end on the embedded preset."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from ovseg.cli import main
from ovseg.data.synthetic_video import write_synthetic_videos
from ovseg.io import read_label_png
from ovseg.io_video import VideoWriter
from ovseg.tracks import read_tracks


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    write_synthetic_videos(root, num_train=0, num_val=1, seed=2, num_frames=3, image_size=48)
    return root


def _frame_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_predict_video_referring_writes_pngs_overlay_and_tracks(clips, tmp_path, capsys):
    folder = clips / "valid" / "JPEGImages" / "clip00000"
    out = tmp_path / "out"
    args = ["predict", str(folder), "--video", "--task", "referring", "--prompt", "red ring"]
    assert main([*args, "--out", str(out), "--fps", "5"]) == 0
    assert "3 frame(s)" in capsys.readouterr().out
    tracks = read_tracks(out / "clip00000_tracks.json")
    assert tracks.data["task"] == "referring" and tracks.data["query"] == "red ring"
    assert tracks.frame_indices == [0, 1, 2] and tracks.data["complete"] is True
    assert [f["time"] for f in tracks.data["video"]["frames"]] == pytest.approx([0, 0.2, 0.4])
    for t in range(3):
        mask = read_label_png(out / "clip00000_frames" / f"{t:05d}_mask.png")
        union = np.zeros((48, 48), bool)
        for _, m in tracks.frame_masks(t):
            union |= m
        np.testing.assert_array_equal(mask > 0, union)
    assert _frame_count(out / "clip00000_overlay.mp4") == 3
    assert (out / "config.yaml").is_file()
    # an earlier run is not overwritten unasked
    assert main([*args, "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--quiet", "--overwrite", "--start-frame", "2"]) == 0
    assert read_tracks(out / "clip00000_tracks.json").frame_indices == [2]


def test_predict_video_instance_from_an_mp4(clips, tmp_path):
    frames = sorted((clips / "valid" / "JPEGImages" / "clip00000").glob("*.jpg"))
    from ovseg.io import read_image

    video = tmp_path / "clip.mp4"
    with VideoWriter(video, fps=4) as writer:
        for path in frames:
            writer.write(read_image(path))
    out = tmp_path / "out"
    code = main(
        ["predict", str(video), "--video", "--task", "instance", "--vocab", "red ring,blue star",
         "--out", str(out), "--quiet", "--no-overlay", "--frame-step", "2"]
    )  # fmt: skip
    assert code == 0
    tracks = read_tracks(out / "clip_tracks.json")
    assert tracks.frame_indices == [0, 2] and tracks.data["class_names"] == [
        "red ring",
        "blue star",
    ]
    ids = read_label_png(out / "clip_frames" / "00002_tracks.png")
    present = {t["id"] for t, _ in tracks.frame_masks(2)}
    assert set(np.unique(ids)) - {0} <= present
    assert not (out / "clip_overlay.mp4").exists()


def test_video_argument_errors(clips, tmp_path, capsys):
    folder = clips / "valid" / "JPEGImages" / "clip00000"
    out = str(tmp_path / "o")
    assert main(["predict", str(folder), "--video", "--out", out]) == 2  # semantic
    assert "--task referring" in capsys.readouterr().err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 20)
    code = main(["predict", str(broken), "--video", "--task", "instance", "--out", out])
    assert code == 2 and "broken.mp4" in capsys.readouterr().err
    code = main(
        ["predict", str(folder), "--video", "--task", "instance", "--out", out,
         "--propagation", "sam2"]
    )  # fmt: skip
    assert code == 2 and "redetect" in capsys.readouterr().err
    code = main(
        ["predict", str(folder), "--video", "--task", "instance", "--out", out,
         "--max-frames", "2"]
    )  # fmt: skip
    assert code == 2 and "3 frames" in capsys.readouterr().err


def test_eval_video_referring_j_and_f(clips, tmp_path, capsys):
    code = main(
        ["eval", "--video", str(clips / "valid.json"), "--task", "referring", "--quiet",
         "--work-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "video_results.json").read_text())
    assert metrics["task"] == "video_referring" and metrics["clips"] == 1
    assert 0.0 <= metrics["J"] <= 1.0 and 0.0 <= metrics["F"] <= 1.0
    assert metrics["J&F"] == pytest.approx((metrics["J"] + metrics["F"]) / 2)
    assert metrics["propagation"] == "redetect"
