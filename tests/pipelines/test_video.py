"""The video pipeline: track ids over time (re-detection and SAM 2 memory), settings, errors.

The detector here returns known masks per frame (an oracle), so that what is tested is the
tracking: which ids continue, start and end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.errors import ConfigError, PromptError, VideoTooLargeError
from ovseg.io import write_png_atomic
from ovseg.pipelines.video import VideoSegmenter
from ovseg.structures import Instances, ReferringResult
from ovseg.vocab import Vocabulary

SIZE = 32


def _square(x0, y0=8, side=8):
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0 : y0 + side, max(x0, 0) : max(x0 + side, 0)] = True
    return mask


def _clip():
    """Frame t: object 'a' moving right 1 px/frame (absent on frame 4), object 'b' from frame 2.

    Returns the frames and, per frame, the list of (label, mask) the oracle detects."""
    rng = np.random.default_rng(0)
    frames, truth = [], []
    for t in range(7):
        objects = []
        if t != 4:
            objects.append((0, _square(2 + t)))
        if t >= 2:
            objects.append((1, _square(20, y0=20, side=6)))
        frame = rng.integers(0, 40, (SIZE, SIZE, 3), dtype=np.uint8)
        for label, mask in objects:
            frame[mask] = (200, 50, 50) if label == 0 else (50, 200, 50)
        frames.append(frame)
        truth.append(objects)
    return frames, truth


class OracleDetector:
    """An instance 'pipeline' that answers each frame with its known masks."""

    query_name = "vocabulary"

    def __init__(self, frames, truth, decoder=None):
        self.answers = {f.tobytes(): t for f, t in zip(frames, truth, strict=True)}
        self.decoder = decoder
        self.calls = 0

    def encode(self, image):
        return image

    def resolve_vocabulary(self, vocabulary):
        return Vocabulary.create(vocabulary if vocabulary is not None else ["a", "b"])

    def __call__(self, image, query=None):
        self.calls += 1
        objects = self.answers[image.tobytes()]
        return Instances(
            masks=np.array([m for _, m in objects], bool).reshape(-1, SIZE, SIZE),
            boxes=np.zeros((len(objects), 4)),
            scores=np.full(len(objects), 0.9),
            labels=np.array([label for label, _ in objects], np.int64),
            class_names=["a", "b"],
        )


@pytest.fixture
def clip_folder(tmp_path):
    frames, truth = _clip()
    for t, frame in enumerate(frames):
        write_png_atomic(frame, tmp_path / f"{t}.png")  # lossless: the oracle recognises them
    return tmp_path, frames, truth


def _ids(results):
    return [r.track_ids.tolist() for r in results]


def test_redetect_keeps_ids_starts_new_ones_and_ends_lost_ones(clip_folder):
    folder, frames, truth = clip_folder
    pipeline = VideoSegmenter(OracleDetector(frames, truth), match_threshold=0.5)
    results = pipeline(folder)
    # 'a' keeps id 1 until it vanishes on frame 4 (patience 0: the track ends), then id 3
    assert _ids(results) == [[1], [1], [1, 2], [1, 2], [2], [2, 3], [2, 3]]
    assert results[3].labels.tolist() == [0, 1] and all(r.detected for r in results)
    np.testing.assert_array_equal(results[1].masks[0], truth[1][0][1])
    # patience 1 bridges the gap: the object comes back under its old id
    patient = VideoSegmenter(OracleDetector(frames, truth), patience=1)
    assert _ids(patient(folder))[5:] == [[1, 2], [1, 2]]
    # greedy gives the same ids here; an IoU threshold above any overlap never continues a track
    greedy = VideoSegmenter(OracleDetector(frames, truth), matching="greedy")
    assert _ids(greedy(folder)) == _ids(results)
    strict = VideoSegmenter(OracleDetector(frames, truth), match_threshold=0.99)
    assert _ids(strict(folder))[:3] == [[1], [2], [3, 4]]


def test_duplicate_detections_under_other_names_are_suppressed(clip_folder):
    folder, frames, truth = clip_folder
    doubled = [[*objects, *((1 - label, m) for label, m in objects)] for objects in truth]

    class Doubled(OracleDetector):
        def __call__(self, image, query=None):
            found = super().__call__(image, query)
            found.scores[len(found) // 2 :] = 0.5  # the copies score lower
            return found

    kept = VideoSegmenter(Doubled(frames, doubled))(folder)
    assert _ids(kept)[:4] == [[1], [1], [1, 2], [1, 2]]
    assert kept[0].labels.tolist() == [0]
    every = VideoSegmenter(Doubled(frames, doubled), detection_nms=None)(folder)
    assert len(every[0]) == 2


def test_frames_without_detections(clip_folder):
    folder, frames, _ = clip_folder
    nothing = OracleDetector(frames, [[] for _ in frames])
    results = VideoSegmenter(nothing)(folder)
    assert [len(r) for r in results] == [0] * 7
    assert results[0].masks.shape == (0, SIZE, SIZE)


def test_frame_range_and_step(clip_folder):
    folder, frames, truth = clip_folder
    pipeline = VideoSegmenter(OracleDetector(frames, truth))
    run = pipeline.track(folder, start=1, stop=6, step=2)
    results = list(run)
    assert [r.index for r in results] == [1, 3, 5] and run.num_frames == 3
    assert run.class_names == ["a", "b"]


@pytest.fixture(scope="module")
def sam2_decoder():
    from ovseg.models.decoders.sam2 import Sam2Decoder
    from tests.models.decoders.sam2_tiny import TINY_SAM2_VIDEO, tiny_sam2

    torch.set_num_threads(1)
    return Sam2Decoder.from_model(tiny_sam2(seed=4, overrides=TINY_SAM2_VIDEO))


def test_sam2_propagation_from_keyframe_masks(clip_folder, sam2_decoder):
    folder, frames, truth = clip_folder
    detector = OracleDetector(frames, truth, decoder=sam2_decoder)
    pipeline = VideoSegmenter(
        detector, propagation="sam2", redetect_every=3, patience=10, min_area=1
    )
    results = pipeline(folder)
    assert detector.calls == 3  # frames 0, 3, 6
    assert [r.detected for r in results] == [True, False, False, True, False, False, True]
    # the keyframe's mask is SAM 2's output for the mask prompt: the given mask
    first = results[0]
    assert first.track_ids.tolist() == [1]
    inter = (first.masks[0] & truth[0][0][1]).sum()
    assert inter / (first.masks[0] | truth[0][0][1]).sum() > 0.8
    # every id is new or continues; none is reused after it ended
    seen, ended = set(), set()
    for previous, current in zip(results, results[1:], strict=False):
        ended |= set(previous.track_ids.tolist()) - set(current.track_ids.tolist())
        assert not (set(current.track_ids.tolist()) & ended - set(previous.track_ids.tolist()))
        seen |= set(current.track_ids.tolist())
    # deterministic: the same run gives the same masks
    again = VideoSegmenter(
        OracleDetector(frames, truth, decoder=sam2_decoder),
        propagation="sam2",
        redetect_every=3,
        patience=10,
    )(folder)
    for a, b in zip(results, again, strict=True):
        assert a.track_ids.tolist() == b.track_ids.tolist()
        np.testing.assert_array_equal(a.masks, b.masks)


def test_settings_and_errors(clip_folder):
    folder, frames, truth = clip_folder
    detector = OracleDetector(frames, truth)
    with pytest.raises(ConfigError, match="no video memory"):
        VideoSegmenter(detector, propagation="sam2")
    with pytest.raises(ConfigError, match="redetect_every"):
        VideoSegmenter(detector, redetect_every=2)
    for bad in ({"propagation": "flow"}, {"matching": "x"}, {"match_threshold": 0}):
        with pytest.raises(ConfigError):
            VideoSegmenter(detector, **bad)

    class Referring(OracleDetector):
        query_name = "phrase"

        def __call__(self, image, query=None):
            objects = self.answers[image.tobytes()]
            mask = next((m for label, m in objects if label == 0), np.zeros((SIZE, SIZE), bool))
            return ReferringResult(mask, 0.7, query, np.zeros((SIZE, SIZE)), None)

    referring = VideoSegmenter(Referring(frames, truth))
    assert referring.task == "referring"
    with pytest.raises(PromptError):
        referring.track(folder)
    results = referring(folder, "the red square")
    assert results[0].class_names == ["the red square"]
    assert [len(r) for r in results] == [1, 1, 1, 1, 0, 1, 1]
    with pytest.raises(VideoTooLargeError, match="7 frames"):
        VideoSegmenter(detector, max_frames=3).track(folder)
