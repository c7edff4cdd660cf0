"""The tracks file: writer, schema checks, reader and the class vote."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ovseg.errors import DatasetError
from ovseg.tracks import TrackRecorder, decode_mask, encode_mask, read_tracks, vote_label


def test_round_trip_and_vote(tmp_path):
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:3, 2:5] = True
    recorder = TrackRecorder("instance", ["a", "b"], ["a", "b"], "clip.mp4", 8, 6, 12.5)
    for index in range(3):
        recorder.add_frame(index * 2, index * 0.16, f"{index * 2:05d}")
        recorder.add(index * 2, 4, index % 2, [0.5, 0.9, 0.3][index], mask)
    path = recorder.write(tmp_path / "t.json", complete=False)
    tracks = read_tracks(path)
    assert tracks.frame_indices == [0, 2, 4] and tracks.size == (6, 8)
    track = tracks.track(4)
    # label 0 totals 0.5 + 0.3 = 0.8, label 1 0.9: the vote is label 1
    assert track["label"] == 1 and track["class"] == "b"
    assert (track["first_frame"], track["last_frame"]) == (0, 4)
    assert track["frames"][0]["box"] == [2.0, 1.0, 5.0, 3.0]
    assert track["score"] == pytest.approx((0.5 + 0.9 + 0.3) / 3)
    np.testing.assert_array_equal(tracks.masks(4)[2], mask)
    assert [t["id"] for t, _ in tracks.frame_masks(2)] == [4]
    assert tracks.data["complete"] is False
    assert vote_label([{"label": 2, "score": 1.0}, {"label": 1, "score": 1.0}]) == 1
    np.testing.assert_array_equal(decode_mask(encode_mask(mask)), mask)


def test_reader_refuses_files_off_the_schema(tmp_path):
    recorder = TrackRecorder("referring", "x", ["x"], "v", 4, 4)
    recorder.add_frame(0, None, "0")
    recorder.add(0, 1, 0, 1.0, np.ones((4, 4), bool))
    good = recorder.to_dict()
    cases = {
        "format": {**good, "format": "other"},
        "label": {**good, "tracks": [{**good["tracks"][0], "label": 3}]},
        "repeated": {**good, "tracks": good["tracks"] * 2},
        "size": {**good, "video": {**good["video"], "width": 5}},
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(DatasetError):
            read_tracks(path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DatasetError):
        read_tracks(tmp_path / "bad.json")
