"""The video evaluation loop on synthetic clips, with an oracle detector: perfect answers score
1, wrong names score 0 unless the tracks are scored class-agnostically."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.data.synthetic_video import write_synthetic_videos
from ovseg.data.ytvis import read_ytvis
from ovseg.evaluation.video_loop import evaluate_video
from ovseg.io import read_image
from ovseg.pipelines.video import VideoSegmenter
from ovseg.structures import Instances, ReferringResult
from ovseg.vocab import Vocabulary


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ytvis")
    # one object that stays in the frame: the oracle's masks link into one track per clip
    # (occluders and fast entries can break mask-IoU links even of perfect masks)
    write_synthetic_videos(
        root, num_train=0, num_val=2, seed=3, num_frames=4, image_size=32, num_objects=1,
        p_enter=0.0, p_exit=0.0,
    )  # fmt: skip
    return root / "valid.json"


class Oracle:
    """Answers every frame with its true objects (optionally under a wrong name)."""

    def __init__(self, data, task="instance", rename=False):
        videos, categories = read_ytvis(data)
        self.names = [categories[c] for c in sorted(categories)]
        self.query_name = "phrase" if task == "referring" else "vocabulary"
        self.rename = rename
        self.answers = {}
        for video in videos:
            for t, path in enumerate(video.frames):
                objects = [(o.name, o.mask(t)) for o in video.objects if o.mask(t).any()]
                self.answers[read_image(path).tobytes()] = objects

    def encode(self, image):
        return image

    def resolve_vocabulary(self, vocabulary):
        return Vocabulary.create(self.names)

    def __call__(self, image, query=None):
        objects = self.answers[image.tobytes()]
        if self.query_name == "phrase":
            mask = next((m for n, m in objects if n == query), np.zeros(image.shape[:2], bool))
            return ReferringResult(mask, 0.9, query, np.zeros(image.shape[:2]), None)
        labels = [self.names.index(n) for n, _ in objects]
        if self.rename:
            labels = [(label + 1) % len(self.names) for label in labels]
        return Instances(
            masks=np.array([m for _, m in objects], bool).reshape(-1, *image.shape[:2]),
            boxes=np.zeros((len(objects), 4)),
            scores=np.linspace(0.9, 0.5, len(objects)),
            labels=np.array(labels, np.int64),
            class_names=self.names,
        )


def test_perfect_instances_score_one(data):
    metrics = evaluate_video(VideoSegmenter(Oracle(data), patience=2), data)
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["gt_tracks"] == metrics["pred_tracks"]


def test_wrong_names_score_zero_unless_class_agnostic(data):
    pipeline = VideoSegmenter(Oracle(data, rename=True), patience=2)
    assert evaluate_video(pipeline, data)["mAP"] == 0.0
    agnostic = evaluate_video(pipeline, data, class_agnostic=True)
    assert agnostic["mAP"] == pytest.approx(1.0) and agnostic["class_agnostic"] is True


def test_perfect_referring_scores_one(data):
    metrics = evaluate_video(VideoSegmenter(Oracle(data, task="referring")), data, limit=1)
    assert metrics["J&F"] == pytest.approx(1.0) and metrics["clips"] == 1
