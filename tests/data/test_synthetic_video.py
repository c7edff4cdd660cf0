"""Synthetic video clips: deterministic, moving, occluding, entering; YouTube-VIS round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ovseg.data.synthetic_video import clip_rng, generate_clip, write_synthetic_videos
from ovseg.data.synthetic_vocab import COLOURS
from ovseg.data.ytvis import read_ytvis
from ovseg.errors import ConfigError
from ovseg.io import read_image


def test_clips_are_deterministic_by_seed():
    a = generate_clip(clip_rng(3, "val", 2), num_frames=4, image_size=32)
    b = generate_clip(clip_rng(3, "val", 2), num_frames=4, image_size=32)
    c = generate_clip(clip_rng(4, "val", 2), num_frames=4, image_size=32)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a.frames, c.frames, strict=True))


def test_objects_move_occlude_and_enter():
    clip = generate_clip(
        np.random.default_rng(0), num_frames=9, image_size=64, num_objects=2, p_enter=0.0,
        p_exit=0.0, p_cross=1.0,
    )  # fmt: skip
    first, top = clip.objects
    assert not np.allclose(first.path[0], first.path[-1])  # it moves
    # visible masks never overlap, and the top object hides part of the first mid-clip
    assert not (first.masks & top.masks).any()
    areas = first.masks.reshape(9, -1).sum(1)
    assert areas[4] < areas.max()
    # ground truth pixels carry the object's colour
    colour = np.asarray(COLOURS[first.name.split()[0]], np.float32)
    frame, mask = clip.frames[0], first.masks[0]
    assert np.abs(frame[mask].mean(0) - colour).max() < 40
    entering = generate_clip(
        np.random.default_rng(1), num_frames=6, image_size=64, num_objects=1, p_enter=1.0
    )
    masks = entering.objects[0].masks
    assert entering.objects[0].kind == "enter" and not masks[0].any() and masks[-1].any()


def test_write_and_read_youtube_vis_layout(tmp_path):
    summary = write_synthetic_videos(
        tmp_path, num_train=0, num_val=2, seed=5, num_frames=3, image_size=32
    )
    data = json.loads((tmp_path / "valid.json").read_text())
    assert {"videos", "annotations", "categories"} <= set(data)
    assert len(data["categories"]) == 64 and data["categories"][0]["id"] == 1
    videos, categories = read_ytvis(tmp_path / "valid.json")
    assert len(videos) == 2 == summary["val"]["clips"]
    clip = generate_clip(clip_rng(5, "val", 0), num_frames=3, image_size=32, split="val")
    first = videos[0]
    assert [o.category_id - 1 for o in first.objects] == [o.class_id for o in clip.objects]
    for obj, truth in zip(first.objects, clip.objects, strict=True):
        assert obj.name == categories[obj.category_id] == truth.name
        for t in range(3):
            np.testing.assert_array_equal(obj.mask(t), truth.masks[t])
    assert np.abs(read_image(first.frames[1]).astype(int) - clip.frames[1]).mean() < 6
    with pytest.raises(ConfigError, match="overwrite"):
        write_synthetic_videos(tmp_path, num_train=0, num_val=1, num_frames=2, image_size=32)
