"""COCO box AP of Detections and the OV-COCO protocol, against pycocotools and by hand."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ovseg.errors import ConfigError, EvaluationError
from ovseg.evaluation.detection_evaluator import (
    OV_COCO_BASE_IDS,
    OV_COCO_NOVEL_IDS,
    CocoDetectionEvaluator,
    OVCocoEvaluator,
    boxes_to_coco_results,
)
from ovseg.models.detectors import Detections

COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def test_the_ov_coco_split():
    assert len(OV_COCO_BASE_IDS) == 48 and len(OV_COCO_NOVEL_IDS) == 17
    assert not set(OV_COCO_BASE_IDS) & set(OV_COCO_NOVEL_IDS)
    assert set(OV_COCO_BASE_IDS) | set(OV_COCO_NOVEL_IDS) < set(COCO_IDS)
    # a few well-known members (names from COCO 2017): airplane, cat, dog novel; person base
    assert {5, 17, 18, 87} <= set(OV_COCO_NOVEL_IDS) and 1 in OV_COCO_BASE_IDS


def _gt(categories):
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100} for i in (1, 2, 3)]
    boxes = [(1, 5, [10, 10, 30, 30]), (1, 1, [50, 50, 20, 20]), (2, 17, [0, 0, 40, 40]),
             (2, 5, [60, 60, 30, 30]), (3, 1, [5, 5, 50, 50]), (3, 2, [70, 5, 20, 20])]  # fmt: skip
    annotations = [
        {"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
         "iscrowd": 0, "segmentation": [[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2],
                                         b[1] + b[3], b[0], b[1] + b[3]]]}
        for k, (i, c, b) in enumerate(boxes)
    ]  # fmt: skip
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# (image, category id, XYXY box, score)
PREDICTIONS = [
    (1, 5, [10, 10, 40, 40], 0.9),  # TP
    (1, 5, [80, 0, 95, 10], 0.8),  # FP
    (2, 5, [62, 62, 90, 90], 0.7),  # TP (IoU 0.87)
    (2, 17, [0, 0, 40, 38], 0.6),  # TP
    (3, 1, [5, 5, 55, 55], 0.95),  # TP
    (1, 1, [50, 50, 70, 76], 0.5),  # TP at IoU 0.5, not at 0.8
    (3, 87, [0, 0, 10, 10], 0.4),  # a novel category without ground truth
]


def _detections(category_ids, image_id):
    rows = [p for p in PREDICTIONS if p[0] == image_id]
    index = {c: k for k, c in enumerate(category_ids)}
    names = [f"c{c}" for c in category_ids]
    return Detections(
        boxes=np.array([r[2] for r in rows], np.float32).reshape(-1, 4),
        scores=np.array([r[3] for r in rows], np.float32),
        query_indices=np.array([index[r[1]] for r in rows]),
        labels=np.array([index[r[1]] for r in rows]),
        queries=names,
        class_names=names,
        image_size=(100, 100),
    )


def test_ov_coco_ap50_by_hand_and_by_pycocotools():
    ids = sorted(OV_COCO_BASE_IDS + OV_COCO_NOVEL_IDS)
    gt = _gt(ids)
    evaluator = OVCocoEvaluator(gt)
    assert evaluator.vocabulary == [f"c{c}" for c in ids]
    for image_id in (1, 2, 3):
        evaluator.process({"image_id": image_id}, _detections(ids, image_id))
    metrics = evaluator.evaluate()
    summary = metrics["ov_coco"]["bbox"]
    # category 5: ranks TP, FP, TP over 2 objects -> precision 1 up to recall 0.5, 2/3 after:
    # 101-point interpolation gives (51 + 50 * 2/3) / 101; category 17: 1.0
    ap5 = (51 + 50 * 2 / 3) / 101
    assert summary["novel"] == pytest.approx(100 * (ap5 + 1.0) / 2, abs=1e-9)
    assert summary["base"] == pytest.approx(100 * (1.0 + 0.0) / 2, abs=1e-9)  # cats 1 and 2
    assert summary["all"] == pytest.approx(100 * (ap5 + 1.0 + 1.0 + 0.0) / 4, abs=1e-9)

    # pycocotools, as Detic's evaluator calls it, on the same results
    results = [
        {"image_id": i, "category_id": c, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
         "score": s}
        for i, c, b, s in PREDICTIONS
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCOeval(gt, gt.loadRes(results), "bbox")
        reference.params.catIds = ids
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    precision = reference.eval["precision"]
    per_category = {}
    for k, cat in enumerate(ids):
        values = precision[0, :, k, 0, -1]
        if (values > -1).any():
            per_category[cat] = values[values > -1].mean() * 100
    novel = [v for c, v in per_category.items() if c in OV_COCO_NOVEL_IDS]
    base = [v for c, v in per_category.items() if c in OV_COCO_BASE_IDS]
    assert summary["novel"] == pytest.approx(np.mean(novel), rel=1e-12)
    assert summary["base"] == pytest.approx(np.mean(base), rel=1e-12)
    assert summary["all"] == pytest.approx(reference.stats[1] * 100, rel=1e-12)
    assert metrics["bbox"]["AP"] == pytest.approx(reference.stats[0] * 100, rel=1e-12)
    documents = evaluator.documents(metrics)
    assert json.loads(documents["results.json"])["ov_coco"]["bbox"]["novel"] == pytest.approx(
        summary["novel"]
    )
    assert "OV-COCO bbox AP50: novel" in evaluator.format(metrics)


def test_ov_coco_with_all_80_categories_scores_only_the_65():
    gt = _gt(COCO_IDS)
    evaluator = OVCocoEvaluator(gt)
    assert len(evaluator.category_ids) == 65
    ids = evaluator.category_ids
    for image_id in (1, 2, 3):
        evaluator.process({"image_id": image_id}, _detections(ids, image_id))
    metrics = evaluator.evaluate()
    assert {row["category_id"] for row in metrics["bbox"]["per_category"]} == set(ids)


def test_ov_coco_refuses_annotations_without_the_split():
    class Dataset:
        coco = _gt([1, 2, 5])

    with pytest.raises(EvaluationError, match="OV-COCO categories"):
        OVCocoEvaluator.from_dataset(Dataset())


def test_coco_box_ap_of_detections_equals_cocoeval():
    ids = [1, 2, 5, 17, 87]
    gt = _gt(ids)
    evaluator = CocoDetectionEvaluator(gt)
    assert evaluator.task == "detection" and evaluator.iou_types == ["bbox"]
    for image_id in (1, 2, 3):
        evaluator.process({"image_id": image_id}, _detections(ids, image_id))
    metrics = evaluator.evaluate()
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCOeval(gt, gt.loadRes(evaluator.results()), "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    assert metrics["bbox"]["AP"] == pytest.approx(reference.stats[0] * 100, rel=1e-12)
    assert metrics["bbox"]["AP50"] == pytest.approx(reference.stats[1] * 100, rel=1e-12)
    with pytest.raises(ConfigError, match="segm"):
        CocoDetectionEvaluator(gt, iou_types=["bbox", "segm"])
    with pytest.raises(EvaluationError, match="classes"):
        evaluator.process({"image_id": 1}, _detections(ids[:3], 1))


def test_boxes_to_coco_results():
    entries = boxes_to_coco_results(
        np.array([[1.5, 2.0, 4.5, 10.0]]), np.array([0.25]), np.array([1]), 7, [3, 9]
    )
    assert entries == [{"image_id": 7, "category_id": 9, "bbox": [1.5, 2.0, 3.0, 8.0],
                        "score": 0.25}]  # fmt: skip
    with pytest.raises(EvaluationError):
        boxes_to_coco_results(np.zeros((1, 4)), np.ones(1), np.array([2]), 7, [3, 9])


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_ov_coco_through_ovseg_eval_with_a_tiny_owlv2(tmp_path):
    from PIL import Image

    from ovseg.evaluation.loop import evaluate
    from tests.models.detectors.tiny_detectors import write_tiny_owl

    ids = sorted(OV_COCO_BASE_IDS + OV_COCO_NOVEL_IDS)
    names = {c: f"{chr(97 + k % 26)}{chr(97 + k // 26)}" for k, c in enumerate(ids)}
    (tmp_path / "images").mkdir()
    images, annotations = [], []
    for image_id, (category, box) in enumerate([(5, [4, 4, 20, 16]), (1, [10, 8, 30, 24])], 1):
        Image.fromarray(np.full((40, 48, 3), 50 * image_id, np.uint8)).save(
            tmp_path / "images" / f"{image_id}.png"
        )
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 40, "width": 48})
        x, y, w, h = box
        annotations.append({"id": image_id, "image_id": image_id, "category_id": category,
                            "bbox": box, "area": w * h, "iscrowd": 0,
                            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})  # fmt: skip
    ann_file = tmp_path / "ov_coco.json"
    ann_file.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": c, "name": names[c]} for c in ids],
            }
        )
    )
    config = {
        "pipelines": {
            "detection": {
                "type": "DetectionPipeline",
                "detector": {"type": "owlv2", "model": str(write_tiny_owl(tmp_path / "owl"))},
                "postprocess": {"box_threshold": 0.0},
            }
        },
        "data": {
            "test": {
                "type": "COCOInstances",
                "ann_file": str(ann_file),
                "img_dir": str(tmp_path / "images"),
            }  # fmt: skip
        },
        "evaluation": {"type": "OVCocoEvaluator", "progress": False},
    }
    results = evaluate(config, work_dir=tmp_path / "work")
    summary = results["ov_coco"]["bbox"]
    assert results["num_images"] == 2 and results["num_predictions"] > 0
    # one novel (5) and one base (1) category have ground truth: each group mean is its AP50
    rows = {r["category_id"]: r["AP50"] for r in results["bbox"]["per_category"]}
    assert summary["novel"] == pytest.approx(rows[5]) and summary["base"] == pytest.approx(rows[1])
    written = json.loads((tmp_path / "work" / "results.json").read_text())
    assert set(written["ov_coco"]["bbox"]) == {"novel", "base", "all"}


def test_from_dataset_with_masks_needs_the_instance_pipeline():
    class Dataset:
        coco = _gt([1, 2, 5, 17])
        category_ids = [1, 2, 5, 17]
        class_names = ["c1", "c2", "c5", "c17"]
        unseen = ["c5"]

    evaluator = CocoDetectionEvaluator.from_dataset(
        Dataset(), iou_types=["bbox", "segm"], groups="auto", pipeline="instance"
    )
    assert evaluator.task == "instance" and evaluator.iou_types == ["bbox", "segm"]
    assert evaluator.groups == {"seen": ["c1", "c2", "c17"], "unseen": ["c5"]}
    with pytest.raises(ConfigError, match="segm needs masks"):
        CocoDetectionEvaluator.from_dataset(Dataset(), iou_types=["segm"], pipeline="detection")
