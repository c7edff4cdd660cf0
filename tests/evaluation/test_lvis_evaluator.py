"""LVIS reader and evaluator against the lvis package, on a hand-made LVIS v1 layout."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from ovseg.data.lvis import LVISInstances
from ovseg.errors import ConfigError, DatasetError, EvaluationError
from ovseg.evaluation.lvis_evaluator import LVISEvaluator, _numpy_float_alias, evaluate_lvis
from ovseg.models.detectors import Detections
from ovseg.structures import Instances


def _polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def write_lvis(root):
    """Two COCO images (one from val2017, one from train2017) and three categories r / c / f."""
    images = []
    for image_id, split in ((1, "val2017"), (2, "train2017")):
        (root / "coco" / split).mkdir(parents=True, exist_ok=True)
        name = f"{image_id:012d}.jpg"
        Image.fromarray(np.full((80, 100, 3), 40 * image_id, np.uint8)).save(
            root / "coco" / split / name
        )
        images.append({"id": image_id, "height": 80, "width": 100,
                       "coco_url": f"http://images.cocodataset.org/{split}/{name}",
                       "neg_category_ids": [2] if image_id == 1 else [3],
                       "not_exhaustive_category_ids": []})  # fmt: skip
    boxes = [(1, 1, [10, 10, 20, 20]), (1, 3, [40, 40, 30, 20]), (2, 2, [5, 5, 30, 30])]
    annotations = [
        {"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
         "segmentation": _polygon(*b)}
        for k, (i, c, b) in enumerate(boxes)
    ]  # fmt: skip
    categories = [
        {"id": 1, "name": "aerosol_can", "synonyms": ["aerosol_can", "spray_can"],
         "frequency": "r", "image_count": 1, "instance_count": 1},
        {"id": 2, "name": "air_conditioner", "synonyms": ["air_conditioner"],
         "frequency": "c", "image_count": 1, "instance_count": 1},
        {"id": 3, "name": "airplane", "synonyms": ["airplane", "aeroplane"],
         "frequency": "f", "image_count": 1, "instance_count": 1},
    ]  # fmt: skip
    path = root / "lvis_v1_val.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


# (image, category, XYXY box, score)
PREDICTIONS = [
    (1, 1, [10, 10, 30, 30], 0.8),  # TP, rare
    (1, 3, [40, 40, 70, 60], 0.5),  # TP, frequent
    (2, 3, [0, 0, 20, 20], 0.9),  # FP: image 2 lists airplane as absent (negative)
    (2, 2, [5, 5, 35, 35], 0.7),  # TP, common
    (1, 2, [60, 0, 90, 20], 0.6),  # FP after the TP (image 1 lists it as negative)
    (2, 1, [0, 0, 50, 50], 0.95),  # ignored: image 2 says nothing about aerosol cans
]


def _detections(image_id):
    rows = [p for p in PREDICTIONS if p[0] == image_id]
    names = ["aerosol can", "air conditioner", "airplane"]
    labels = np.array([r[1] - 1 for r in rows])
    return Detections(
        boxes=np.array([r[2] for r in rows], np.float32),
        scores=np.array([r[3] for r in rows], np.float32),
        query_indices=labels,
        labels=labels,
        queries=names,
        class_names=names,
        image_size=(80, 100),
    )


def test_lvis_reader(tmp_path):
    ann_file = write_lvis(tmp_path)
    data = LVISInstances(ann_file, tmp_path / "coco", synonyms=True)
    assert data.class_names == ["aerosol can", "air conditioner", "airplane"]
    assert data.vocabulary[0] == ("aerosol can", "spray can")
    assert data.frequency == {1: "r", 2: "c", 3: "f"}
    second = data[1]
    assert second["image_path"].endswith("train2017/000000000002.jpg")
    np.testing.assert_array_equal(second["instances"]["boxes"], [[5, 5, 35, 35]])
    assert second["instances"]["masks"].shape == (1, 80, 100)
    assert second["instances"]["masks"][0].sum() == pytest.approx(900, abs=70)
    (tmp_path / "coco" / "train2017" / "000000000002.jpg").unlink()
    with pytest.raises(DatasetError, match="not under"):
        LVISInstances(ann_file, tmp_path / "coco")


@pytest.mark.filterwarnings("ignore:The .warn. method is deprecated:DeprecationWarning")
def test_lvis_ap_by_hand_and_by_the_lvis_package(tmp_path):
    ann_file = write_lvis(tmp_path)
    data = LVISInstances(ann_file, tmp_path / "coco")
    evaluator = LVISEvaluator.from_dataset(data)
    assert evaluator.vocabulary == data.class_names and evaluator.task == "detection"
    for image_id in (1, 2):
        evaluator.process({"image_id": image_id}, _detections(image_id))
    metrics = evaluator.evaluate()["bbox"]
    # rare and common: the TP ranks first -> 100; frequent: FP (negative image) then TP -> 50
    assert metrics["APr"] == pytest.approx(100.0)
    assert metrics["APc"] == pytest.approx(100.0)
    assert metrics["APf"] == pytest.approx(50.0)
    assert metrics["AP"] == pytest.approx(250.0 / 3)
    assert "float" not in np.__dict__  # the compatibility alias is gone again

    import lvis

    with _numpy_float_alias(), contextlib.redirect_stdout(io.StringIO()):
        gt = lvis.LVIS(str(ann_file))
        reference = lvis.LVISEval(gt, lvis.LVISResults(gt, evaluator.results()), "bbox")
        reference.run()
        expected = reference.get_results()
    for name in ("AP", "AP50", "AP75", "APr", "APc", "APf", "APs", "APm", "APl"):
        value = expected[name] * 100 if expected[name] >= 0 else float("nan")
        np.testing.assert_allclose(metrics[name], value, rtol=1e-12)
    assert "APr" in evaluator.format(evaluator.evaluate())


def test_lvis_mask_ap_uses_mask_areas(tmp_path):
    ann_file = write_lvis(tmp_path)
    data = LVISInstances(ann_file, tmp_path / "coco")
    with pytest.raises(ConfigError, match="pipeline: instance"):
        LVISEvaluator.from_dataset(data, iou_types=["segm"])
    evaluator = LVISEvaluator.from_dataset(data, iou_types=["bbox", "segm"], pipeline="instance")
    assert evaluator.task == "instance"
    for image_id in (1, 2):
        sample = data[image_id - 1]
        found = sample["instances"]
        evaluator.process(
            {"image_id": image_id},
            Instances(
                masks=found["masks"],
                boxes=found["boxes"],
                scores=np.full(len(found["labels"]), 0.9),
                labels=found["labels"],
                class_names=data.class_names,
            ),
        )
    metrics = evaluator.evaluate()
    assert metrics["segm"]["AP"] == pytest.approx(100.0)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)
    assert all("bbox" in r and "segmentation" in r for r in evaluator.results())


def test_lvis_refuses_empty_results(tmp_path):
    ann_file = write_lvis(tmp_path)
    with pytest.raises(EvaluationError, match="empty"):
        evaluate_lvis(ann_file, [], ["bbox"])
