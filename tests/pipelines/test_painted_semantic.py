"""PaintedSemanticSegmenter: instance masks painted over a semantic map, best score on top."""

from __future__ import annotations

import numpy as np
import pytest

import ovseg
from ovseg.cli import main
from ovseg.errors import ConfigError
from ovseg.io import read_image
from ovseg.pipelines.base import EncodedImage
from ovseg.pipelines.painted_semantic import PaintedSemanticSegmenter, paint_instances
from ovseg.structures import Instances, OVSegResult
from tests.quick_start import SCENE, run_quick_start


def test_masks_are_painted_in_ascending_score_order_and_weak_ones_skipped():
    sem_seg = np.zeros((4, 4), dtype=np.int64)
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, :2] = True  # best, painted last
    masks[1, :3] = True  # overlaps mask 0 and is worse: hidden where they overlap
    masks[2, 3] = True  # under min_score: not painted
    labels, painted_score, count = paint_instances(
        sem_seg, masks, np.array([0.9, 0.5, 0.05]), [1, 2, 3], min_score=0.1
    )
    assert count == 2
    assert (labels[:2] == 1).all() and (labels[2] == 2).all() and (labels[3] == 0).all()
    np.testing.assert_array_equal(painted_score[:2], np.float32(0.9))
    np.testing.assert_array_equal(painted_score[2], np.float32(0.5))
    np.testing.assert_array_equal(painted_score[3], -1.0)
    assert (sem_seg == 0).all()  # the input map is not changed
    with pytest.raises(ConfigError, match="do not fit"):
        paint_instances(sem_seg, np.zeros((1, 3, 4), dtype=bool), np.ones(1), [0], 0.0)


class _FakeSemantic:
    """Labels everything with the vocabulary's last class; probabilities 0.4."""

    def encode_batch(self, images):
        return [EncodedImage(image=image) for image in images]

    def predict(self, encoded, vocab):
        height, width = encoded.size
        return OVSegResult(
            sem_seg=np.full((height, width), len(vocab) - 1, dtype=np.int64),
            class_names=vocab.names,
            probs=np.zeros((len(vocab), height, width), dtype=np.float32),
            label_scores=np.full((height, width), 0.4, dtype=np.float32),
            meta={"semantic": True},
        )


class _FakeInstance:
    """One square per thing class of the vocabulary it is given, scored 0.8, 0.7 ..."""

    background_classes = ("wall",)

    def __init__(self):
        self.vocabularies = []

    def encode_batch(self, images):
        return [EncodedImage(image=image) for image in images]

    def predict(self, encoded, vocab):
        self.vocabularies.append(vocab.names)
        height, width = encoded.size
        masks = np.zeros((len(vocab), height, width), dtype=bool)
        for index in range(len(vocab)):
            masks[index, index * 2 : index * 2 + 2, :2] = True
        return Instances(
            masks=masks,
            boxes=np.zeros((len(vocab), 4)),
            scores=0.8 - 0.1 * np.arange(len(vocab)),
            labels=np.arange(len(vocab)),
            class_names=vocab.names,
        )


def test_instances_take_their_index_in_the_whole_vocabulary():
    instance = _FakeInstance()
    painted = PaintedSemanticSegmenter(_FakeSemantic(), instance)
    assert painted.stuff == ("wall",)  # the instance pipeline's background classes
    image = np.zeros((8, 6, 3), dtype=np.uint8)
    result = painted(image, ["wall", "red star", "blue ring"])
    assert instance.vocabularies == [["red star", "blue ring"]]
    assert result.class_names == ["wall", "red star", "blue ring"]
    assert (result.sem_seg[:2, :2] == 1).all() and (result.sem_seg[2:4, :2] == 2).all()
    assert (result.sem_seg[4:] == 2).all() and (result.sem_seg[:, 2:] == 2).all()
    np.testing.assert_allclose(result.label_scores[:2, :2], 0.8)
    np.testing.assert_allclose(result.label_scores[2:4, :2], 0.7)
    np.testing.assert_allclose(result.label_scores[4:], 0.4)
    assert result.probs is None and result.meta["painted_instances"] == 2
    assert result.meta["semantic"]
    # per call: a higher bar paints only the best mask
    again = painted.predict(
        painted.encode(image), ["wall", "red star", "blue ring"], min_score=0.75
    )
    assert again.meta["painted_instances"] == 1 and (again.sem_seg[2:4, :2] == 2).all()
    # only stuff in the vocabulary: the semantic map as it is
    alone = painted(image, ["wall"])
    assert alone.meta["painted_instances"] == 0 and (alone.sem_seg == 0).all()


def test_bad_parts_are_config_errors():
    with pytest.raises(ConfigError, match="semantic must be a pipeline"):
        PaintedSemanticSegmenter(object(), _FakeInstance())
    with pytest.raises(ConfigError, match="stuff must list"):
        PaintedSemanticSegmenter(_FakeSemantic(), _FakeInstance(), stuff="sand")


def test_shapes_tiny_painted_route_names_the_quick_start_objects(tmp_path):
    """``--pipeline semantic_painted`` on the quick-start scene against its ground truth."""
    run = run_quick_start(tmp_path / "painted", "--pipeline", "semantic_painted")
    # measured (2026-12-05): square 82 % of its pixels right (the dense map alone calls 52 % of it
    # "blue ring"), ring 100 %, star 98 %; the diamond is split, 81 of its 226 pixels right and 131
    # "red star" (README, painted section)
    assert run.named["blue square"] == "blue square"
    assert run.named["blue ring"] == "blue ring"
    assert run.named["red star"] == "red star"
    plain = ovseg.create_pipeline("shapes-tiny", run.classes)(read_image(SCENE))
    assert (run.labels == run.truth).mean() > (plain.sem_seg == run.truth).mean()


def test_eval_scores_the_painted_section(tmp_path):
    """``evaluation.pipeline`` picks the section ``ovseg eval`` scores; an unknown one is named."""
    from ovseg.evaluation.loop import evaluate

    root = tmp_path / "scenes"
    assert main(["data", "synth", "--out", str(root), "--num", "0", "--num-val", "2",
                 "--seed", "3", "--formats", "ade20k"]) == 0  # fmt: skip
    cfg = {
        "_base_": "shapes-tiny",
        "data": {"test": {"type": "ADE20KDataset", "root": str(root), "split": "validation"}},
        "evaluation": {"pipeline": "semantic_painted", "progress": False},
    }
    painted = evaluate(cfg, work_dir=tmp_path / "painted")
    plain = evaluate({**cfg, "evaluation": {"progress": False}}, work_dir=tmp_path / "plain")
    assert painted["mIoU"] != plain["mIoU"]
    saved = (tmp_path / "painted" / "config.yaml").read_text()
    assert "semantic_painted" in saved
    with pytest.raises(ConfigError, match="no pipeline for task 'nope'"):
        evaluate({**cfg, "evaluation": {"pipeline": "nope"}}, work_dir=tmp_path / "nope")


def test_predict_refuses_pipeline_with_vocab_free(tmp_path, capsys):
    args = ["predict", str(SCENE), "--pipeline", "semantic_painted", "--vocab-free"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "--pipeline picks a section" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_two_parts_of_the_shapes_tiny_painted_route_share_one_clip():
    pipeline = ovseg.create_pipeline("shapes-tiny", task="semantic_painted")
    assert pipeline.instance.backbone is pipeline.semantic.backbone
