"""Referring expression comprehension (Acc@0.5) through the evaluation loop."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.data.refcoco import RefCOCODataset
from ovseg.errors import EvaluationError
from ovseg.evaluation.grounding_evaluator import RECEvaluator, clean_phrase, top1_correct
from ovseg.evaluation.loop import evaluate, run_evaluation
from ovseg.models.detectors import Detections
from ovseg.pipelines.base import EncodedImage
from tests.data.test_refcoco import write_refer
from tests.models.detectors.tiny_detectors import write_tiny_grounding_dino


def _found(boxes, scores):
    n = len(scores)
    return Detections(
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.asarray(scores, np.float32),
        query_indices=np.zeros(n),
        labels=np.zeros(n),
        queries=["q"],
        class_names=["q"],
        image_size=(20, 30),
    )


def test_top1_correct_at_iou_half():
    target = np.array([0, 0, 10, 10])
    assert top1_correct(_found([[0, 0, 10, 5]], [0.9]), target)  # IoU exactly 0.5
    assert not top1_correct(_found([[0, 0, 10, 4.9]], [0.9]), target)
    # the best-scored box decides, wherever it stands in the list
    assert not top1_correct(_found([[0, 0, 10, 10], [20, 0, 30, 10]], [0.2, 0.9]), target)
    assert not top1_correct(_found(np.zeros((0, 4)), []), target)
    assert clean_phrase("the man. on the left.") == "the man on the left"


class ScriptedPipeline:
    """Answers each phrase with a given box (a stand-in for a detection pipeline)."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def set_image(self, image):
        return EncodedImage(image=image)

    def predict(self, encoded, vocabulary, **settings):
        phrase = vocabulary.queries[0]
        self.calls.append((phrase, settings))
        return _found([self.answers[phrase]], [0.5])


def test_accuracy_through_the_loop(tmp_path):
    data = RefCOCODataset(write_refer(tmp_path), split="val")
    # targets: ref 0 (image 1) box (2, 2, 12, 10); ref 1 (image 2) box (0, 0, 10, 10)
    pipeline = ScriptedPipeline(
        {
            "left box": [2, 2, 12, 10],  # exact
            "the box on the left": [15, 5, 25, 15],  # the other box
            "dark square": [0, 0, 10, 6],  # IoU 0.6
        }
    )
    evaluator = RECEvaluator.from_dataset(data)
    results = run_evaluation(evaluator, data, pipeline, progress=False, show=False)
    assert results["Acc@0.5"] == pytest.approx(200 / 3)
    assert results["correct"] == 2 and results["num_expressions"] == 3
    assert results["dataset"] == "refcoco val"
    assert all(s == RECEvaluator.predict_settings for _, s in pipeline.calls)


def test_gref_targets_are_refused(tmp_path):
    data = RefCOCODataset(
        write_refer(tmp_path, grefs=True, refs_name="grefs(unc).json"), dataset="grefcoco"
    )
    evaluator = RECEvaluator.from_dataset(data)
    pipeline = ScriptedPipeline({"both boxes": [0, 0, 1, 1], "a cat": [0, 0, 1, 1]})
    with pytest.raises(EvaluationError, match="single object"):
        run_evaluation(evaluator, data, pipeline, indices=[2], progress=False, show=False)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_rec_with_a_tiny_grounding_dino(tmp_path):
    refer = write_refer(tmp_path / "refer")
    model = write_tiny_grounding_dino(tmp_path / "gdino")
    config = {
        "pipelines": {
            "detection": {
                "type": "DetectionPipeline",
                "detector": {"type": "GroundingDinoDetector", "model": str(model)},
            }
        },
        "data": {"test": {"type": "RefCOCODataset", "root": str(refer), "split": "val"}},
        "evaluation": {"type": "RECEvaluator", "progress": False},
    }
    results = evaluate(config, work_dir=tmp_path / "work")
    assert results["num_expressions"] == 3 and 0 <= results["correct"] <= 3
    assert (tmp_path / "work" / "results.json").is_file()


def test_rec_with_a_tiny_mdetr(tmp_path):
    """MDETR scores an expression's boxes by 1 - p(no object) (the reference's refexp ranking):
    Acc at an IoU threshold equals the count recomputed from the model's raw outputs (the
    threshold is put between the top-1 boxes' IoUs, so that some count and some do not)."""
    import torch

    from ovseg.models.classifiers.nms import box_iou
    from ovseg.registry import DETECTORS
    from tests.models.detectors.tiny_mdetr import (
        tiny_architecture,
        write_tiny_checkpoint,
        write_tiny_tokenizer,
    )

    refer = write_refer(tmp_path / "refer")
    detector = {
        "type": "MdetrDetector", "checkpoint": str(write_tiny_checkpoint(tmp_path / "m.pth")),
        "tokenizer": str(write_tiny_tokenizer(tmp_path / "tok")),
        "architecture": tiny_architecture(), "min_size": 40, "max_size": 64,
    }  # fmt: skip
    model = DETECTORS.build(detector)
    ious = []
    for sample in RefCOCODataset(refer, split="val"):
        for expression in sample["expressions"]:
            with torch.no_grad():
                outputs, _ = model.predict([sample["image"]], clean_phrase(expression["text"]))
            best = int((1 - outputs["pred_logits"][0].softmax(-1)[:, -1]).argmax())
            cx, cy, w, h = outputs["pred_boxes"][0, best].tolist()
            height, width = sample["image"].shape[:2]
            box = np.array([[max(cx - w / 2, 0) * width, max(cy - h / 2, 0) * height,
                             min(cx + w / 2, 1) * width, min(cy + h / 2, 1) * height]])  # fmt: skip
            ious.append(float(box_iou(box, expression["box"][None])[0, 0]))
    assert len(ious) == 3 and max(ious) > 0
    threshold = float(np.mean(sorted(ious)[-2:]))  # between the two best
    config = {
        "pipelines": {"detection": {"type": "DetectionPipeline", "detector": detector}},
        "data": {"test": {"type": "RefCOCODataset", "root": str(refer), "split": "val"}},
        "evaluation": {"type": "RECEvaluator", "progress": False, "iou_threshold": threshold},
    }
    results = evaluate(config, work_dir=tmp_path / "work")
    assert results["num_expressions"] == 3
    assert results["correct"] == sum(iou >= threshold for iou in ious) >= 1
