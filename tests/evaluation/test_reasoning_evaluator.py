"""ReasoningEvaluator in the evaluation loop: synthetic queries, ReasonSeg-style ignore, RefCOCO."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ovseg.data.synthetic_reasoning import SyntheticReasoningDataset
from ovseg.errors import EvaluationError
from ovseg.evaluation.loop import build_evaluator, evaluate, run_evaluation
from ovseg.evaluation.reasoning_evaluator import ReasoningEvaluator, prediction_mask
from ovseg.registry import PIPELINES

SETTINGS = {"num": 3, "seed": 11, "split": "val", "image_size": 48, "queries_per_scene": None}
DATA = {"type": "SyntheticReasoningDataset", **SETTINGS}


@PIPELINES.register("TestOracleReasoning")
class OracleReasoning:
    """Answers each question with its target (one [SEG] per target); questions of the kinds in
    ``silent`` get no [SEG]."""

    def __init__(self, data: dict, silent: tuple = ()) -> None:
        dataset = SyntheticReasoningDataset(**data, multi_target="per_object")
        self.answers = {}
        for index in range(len(dataset)):
            item = dataset[index]
            for q in item["queries"]:
                masks = q["masks"] if q["kind"] not in silent else q["masks"][:0]
                self.answers[(item["image"].tobytes(), q["question"])] = masks
        self.image = None

    def set_image(self, image):
        self.image = image

    def predict(self, question):
        return self.answers[(self.image.tobytes(), question)]


@pytest.fixture(scope="module")
def dataset():
    return SyntheticReasoningDataset(**SETTINGS)


def test_oracle_scores_100_with_rows_per_group_and_kind(dataset):
    evaluator = build_evaluator({"type": "ReasoningMetric"}, dataset)
    results = run_evaluation(
        evaluator, dataset, OracleReasoning(SETTINGS), progress=False, show=False
    )
    total = sum(len(dataset[i]["queries"]) for i in range(len(dataset)))
    assert results["overall"]["num_samples"] == total and results["num_images"] == 3
    assert results["overall"]["gIoU"] == pytest.approx(100.0, abs=1e-3)
    assert results["overall"]["cIoU"] == pytest.approx(100.0)
    rows = results["groups"]
    kinds = {q["kind"] for i in range(3) for q in dataset[i]["queries"]}
    groups = {q["group"] for i in range(3) for q in dataset[i]["queries"]}
    assert set(rows) == kinds | groups
    assert sum(rows[k]["num_samples"] for k in kinds) == total
    assert sum(rows[g]["num_samples"] for g in groups) == total


def test_silent_kinds_score_zero_and_count_as_no_seg(dataset):
    evaluator = ReasoningEvaluator()
    pipeline = OracleReasoning(SETTINGS, silent=("class",))
    results = run_evaluation(evaluator, dataset, pipeline, progress=False, show=False)
    assert results["groups"]["class"]["gIoU"] == 0.0
    assert results["groups"]["class"]["no_seg"] == 100.0
    assert results["groups"]["relation"]["gIoU"] == pytest.approx(100.0, abs=1e-3)
    n_class = results["groups"]["class"]["num_samples"]
    assert results["overall"]["no_seg"] == pytest.approx(
        100 * n_class / results["overall"]["num_samples"]
    )


def test_evaluate_from_config_writes_results(tmp_path):
    cfg = {
        "data": {"test": DATA},
        "pipelines": {"reasoning": {"type": "TestOracleReasoning", "data": SETTINGS}},
        "evaluation": {"type": "ReasoningMetric", "progress": False},
    }
    results = evaluate(cfg, work_dir=tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["overall"]["num_samples"] == results["overall"]["num_samples"] > 0


def test_refcoco_expressions_and_reasonseg_ignore():
    gt = np.zeros((4, 4), bool)
    gt[:2] = True
    evaluator = ReasoningEvaluator(eps=0)
    refer = {"expressions": [{"text": " The Left Dog ", "mask": gt}]}
    assert evaluator.queries(refer) == [
        " What is the left dog in this image? Please output segmentation mask."
    ]
    evaluator.process(refer, [gt[None]])
    ignore = np.zeros((4, 4), bool)
    ignore[2:] = True  # a wrong prediction only inside the ignored half costs nothing
    reason = {
        "queries": [
            {"question": "q", "masks": gt[None], "ignore": ignore, "kind": "long", "group": None}
        ]
    }
    evaluator.process(reason, [np.ones((4, 4), bool)])
    results = evaluator.evaluate()
    assert results["overall"]["gIoU"] == 100.0
    assert list(results["groups"]) == ["long", "refer"]
    assert "long" in evaluator.format(results)
    with pytest.raises(EvaluationError, match="2 predictions for 1"):
        evaluator.process(reason, [gt, gt])


def test_prediction_forms():
    shape = (3, 3)
    full = np.ones(shape, bool)

    class Result:
        masks = np.stack([full, full])

    assert prediction_mask(None, shape)[1] is True
    assert prediction_mask(np.zeros((0, 3, 3), bool), shape)[1] is True
    mask, no_seg = prediction_mask(Result(), shape)
    assert mask.all() and not no_seg
    assert prediction_mask(full, shape)[0].all()
    with pytest.raises(EvaluationError):
        prediction_mask(np.full((2, 3, 3), 0.5), shape)


@PIPELINES.register("TestReasonSegOracle")
class ReasonSegOracle:
    """Answers with the image's target plus every ignored pixel (which must not count)."""

    def __init__(self, root: str) -> None:
        from ovseg.data.reasonseg import ReasonSegDataset

        data = ReasonSegDataset(root, split="val", queries="all")
        self.labels = {data[i]["image"].tobytes(): data[i]["label"] for i in range(len(data))}
        self.image = None

    def set_image(self, image):
        self.image = image

    def predict(self, question):
        label = self.labels[self.image.tobytes()]
        return (label != 0)[None]


def test_reasonseg_files_score_100_when_only_ignored_pixels_are_wrong(tmp_path):
    from tests.data.test_reasonseg import _rect, _write

    split = tmp_path / "reason_seg" / "ReasonSeg" / "val"
    _write(split, "a", ["the thing you sit on", "a seat"], True,
           [_rect("target", 2, 2, 20, 14), _rect("ignore", 22, 2, 30, 10)])  # fmt: skip
    _write(split, "b", ["chair"], False, [_rect("target", 5, 5, 12, 12)])
    Image.fromarray(np.full((24, 32, 3), 200, np.uint8)).save(split / "b.jpg")  # tell them apart
    cfg = {
        "data": {"test": {"type": "ReasonSegDataset", "root": str(tmp_path), "queries": "all"}},
        "pipelines": {"reasoning": {"type": "TestReasonSegOracle", "root": str(tmp_path)}},
        "evaluation": {"type": "ReasoningMetric", "progress": False},
    }
    results = evaluate(cfg, work_dir=tmp_path / "eval")
    assert results["overall"]["num_samples"] == 3
    assert results["overall"]["gIoU"] == pytest.approx(100.0, abs=1e-3)
    assert results["overall"]["cIoU"] == pytest.approx(100.0)
    assert results["groups"]["long"]["num_samples"] == 2
    assert results["groups"]["short"]["num_samples"] == 1
