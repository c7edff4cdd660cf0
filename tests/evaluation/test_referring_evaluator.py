"""ReferringEvaluator on a COCO instances dataset (one phrase per class present), in the loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ovseg.data.coco_instances import COCOInstances
from ovseg.data.writers import write_synthetic_world
from ovseg.errors import ConfigError, EvaluationError
from ovseg.evaluation.loop import build_evaluator, evaluate, run_evaluation
from ovseg.evaluation.referring_evaluator import ReferringEvaluator, phrases_and_targets
from ovseg.registry import PIPELINES
from ovseg.structures import PointPrompts, ReferringResult


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("referring_eval")
    write_synthetic_world(
        out, num_train=0, num_val=3, seed=4, image_size=48, formats=("coco",), progress=False
    )
    return out / "coco"


@pytest.fixture(scope="module")
def dataset(coco_root) -> COCOInstances:
    return COCOInstances(coco_root, split="val")


@PIPELINES.register("TestGroundTruthReferring")
class GroundTruthReferring:
    """Answers each phrase with the union of its class's masks; ``miss`` answers with nothing."""

    def __init__(self, root: str, split: str, template: str = "{}", miss: tuple = ()) -> None:
        data = COCOInstances(root, split=split)
        self.targets = {}
        for index in range(len(data)):
            sample = data[index]
            for _name, phrase, target in phrases_and_targets(
                sample, data.class_names, data.category_ids, template
            ):
                self.targets[(sample["image"].tobytes(), phrase)] = target
        self.miss = set(miss)
        self.image = None

    def set_image(self, image):
        self.image = image

    def predict(self, phrase: str) -> ReferringResult:
        mask = self.targets[(self.image.tobytes(), phrase)].copy()
        if phrase in self.miss:
            mask[:] = False
        shape = mask.shape
        return ReferringResult(
            mask, 1.0, phrase, np.zeros(shape, np.float32), PointPrompts(np.zeros((0, 2)), [])
        )


def test_targets_are_class_unions(dataset):
    sample = dataset[0]
    found = phrases_and_targets(sample, dataset.class_names, dataset.category_ids, "the {}")
    ids = sample["instances"]["category_ids"]
    assert [name for name, _, _ in found] == [
        dataset.class_names[dataset.category_ids.index(c)] for c in sorted(set(ids))
    ]
    for name, phrase, target in found:
        assert phrase == f"the {name}"
        chosen = [
            m
            for m, c in zip(sample["instances"]["masks"], ids, strict=True)
            if dataset.class_names[dataset.category_ids.index(c)] == name
        ]
        np.testing.assert_array_equal(target, np.any(chosen, axis=0))


def test_oracle_scores_100_and_misses_count_per_group(dataset, coco_root):
    oracle = GroundTruthReferring(str(coco_root), "val")
    results = run_evaluation(
        ReferringEvaluator.from_dataset(dataset), dataset, oracle, progress=False
    )
    assert results["overall"]["gIoU"] == pytest.approx(100.0)
    assert results["overall"]["cIoU"] == pytest.approx(100.0)
    samples = results["overall"]["num_samples"]
    names = sorted(
        {
            n
            for i in range(len(dataset))
            for n, _, _ in phrases_and_targets(
                dataset[i], dataset.class_names, dataset.category_ids, "{}"
            )
        }
    )
    missed = names[0]
    groups = {"unseen": [missed], "seen": names[1:]}
    partial = GroundTruthReferring(str(coco_root), "val", miss=(missed,))
    evaluator = ReferringEvaluator.from_dataset(dataset, groups=groups)
    results = run_evaluation(evaluator, dataset, partial, progress=False)
    unseen, seen = results["groups"]["unseen"], results["groups"]["seen"]
    assert unseen["gIoU"] == 0.0 and seen["gIoU"] == pytest.approx(100.0)
    assert unseen["num_samples"] + seen["num_samples"] == samples
    expected = 100.0 * seen["num_samples"] / samples
    assert results["overall"]["gIoU"] == pytest.approx(expected)


def test_config_runner_writes_results_and_prints_the_table(coco_root, tmp_path, capsys):
    config = {
        "pipelines": {
            "referring": {
                "type": "TestGroundTruthReferring",
                "root": str(coco_root),
                "split": "val",
                "template": "a {}",
            }
        },
        "data": {"test": {"type": "COCOInstances", "root": str(coco_root), "split": "val"}},
        "evaluation": {"type": "ReferringMetric", "phrase": "a {}", "progress": False},
    }
    results = evaluate(config, work_dir=tmp_path / "w", limit=2)
    assert results["num_images"] == 2 and results["overall"]["gIoU"] == pytest.approx(100.0)
    saved = json.loads((tmp_path / "w" / "results.json").read_text())
    assert saved["overall"]["num_samples"] == results["overall"]["num_samples"]
    assert "gIoU" in capsys.readouterr().out
    config["evaluation"]["phrase"] = "no slot"
    with pytest.raises(ConfigError, match="must contain"):
        evaluate(config, work_dir=tmp_path / "w2")


def test_protocol_queries_process_merge_evaluate(dataset, coco_root):
    oracle = GroundTruthReferring(str(coco_root), "val")
    names = sorted(set(dataset.class_names))
    evaluator = build_evaluator({"type": "referring_iou", "groups": {"unseen": names[:3]}}, dataset)
    assert isinstance(evaluator, ReferringEvaluator) and evaluator.task == "referring"
    shares = []
    for index in range(len(dataset)):
        sample = dataset[index]
        share = ReferringEvaluator.from_dataset(dataset, groups={"unseen": names[:3]})
        oracle.set_image(sample["image"])
        phrases = share.queries(sample)
        assert phrases == [p for _, p, _ in phrases_and_targets(
            sample, dataset.class_names, dataset.category_ids, "{}")]  # fmt: skip
        share.process(sample, [oracle.predict(p) for p in phrases])
        shares.append(share.state())
    evaluator.merge(shares)
    results = evaluator.evaluate()
    assert results["num_images"] == len(dataset)
    assert results["overall"]["gIoU"] == pytest.approx(100.0)
    assert set(results["groups"]) == {"seen", "unseen"}
    sample = dataset[0]
    with pytest.raises(EvaluationError, match="predictions for"):
        evaluator.process(sample, [])
    # a bare (H, W) mask is a prediction too: all wrong here
    evaluator.reset()
    evaluator.process(sample, [np.zeros(sample["image"].shape[:2], bool)] * len(
        evaluator.queries(sample)))  # fmt: skip
    assert evaluator.evaluate()["overall"]["gIoU"] == 0.0
