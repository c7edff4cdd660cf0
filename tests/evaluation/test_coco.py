"""COCO results export and box / mask AP through pycocotools (synthetic scenes as ground truth)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from ovseg.data.coco_instances import COCOInstances, validate_coco_instances
from ovseg.data.coco_writer import mask_to_rle
from ovseg.data.writers import write_synthetic_world
from ovseg.errors import DatasetError, EvaluationError
from ovseg.evaluation.coco import (
    STAT_NAMES,
    coco_metrics_to_json,
    evaluate_coco,
    format_coco_table,
    instances_to_coco_results,
    load_coco_results,
    write_coco_metrics,
    write_coco_results,
)
from ovseg.structures import Instances


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> COCOInstances:
    """4 scenes of 48x48 pixels, 12 objects, two categories with two objects in one image."""
    out = tmp_path_factory.mktemp("coco_eval")
    write_synthetic_world(
        out, num_train=0, num_val=4, seed=2, image_size=48, formats=("coco",), progress=False
    )
    return COCOInstances(out / "coco", split="val")


def _ground_truth_instances(sample: dict, class_names: list[str]) -> Instances:
    inst = sample["instances"]
    n = len(inst["labels"])
    return Instances(inst["masks"], inst["boxes"], np.ones(n), inst["labels"], class_names)


def _results(dataset, transform=lambda inst, image_id: inst, indices=None) -> list[dict]:
    results = []
    for index in range(len(dataset)) if indices is None else indices:
        sample = dataset[index]
        inst = transform(_ground_truth_instances(sample, dataset.class_names), sample["image_id"])
        results += instances_to_coco_results(inst, sample["image_id"], dataset.category_ids)
    return results


def _shift(dx: int):
    """Move every box and mask ``dx`` pixels right; scores vary so the ranking matters."""

    def transform(inst: Instances, image_id: int) -> Instances:
        masks = np.roll(inst.masks, dx, axis=2)
        boxes = inst.boxes + np.array([dx, 0, dx, 0], dtype=np.float32)
        scores = np.linspace(0.9, 0.3, len(inst)) if len(inst) else inst.scores
        return Instances(masks, boxes, scores, inst.labels, inst.class_names)

    return transform


def test_perfect_predictions_score_100(dataset) -> None:
    metrics = evaluate_coco(dataset.coco, _results(dataset))
    assert metrics["num_images"] == 4 and metrics["num_predictions"] == 12
    for iou_type in ("bbox", "segm"):
        m = metrics[iou_type]
        for name in ("AP", "AP50", "AP75", "AR10", "AR100"):
            assert m[name] == pytest.approx(100.0), (iou_type, name)
        assert math.isnan(m["APl"])  # no object above 96^2 pixels in 48x48 images
        present = {c["category_id"]: c["AP"] for c in m["per_category"]}
        gt_categories = {a["category_id"] for a in dataset.coco.anns.values()}
        assert all(present[c] == pytest.approx(100.0) for c in gt_categories)
        assert all(math.isnan(ap) for c, ap in present.items() if c not in gt_categories)
        assert [c["name"] for c in m["per_category"]] == dataset.class_names


def test_shifted_predictions_score_less(dataset) -> None:
    one = evaluate_coco(dataset.coco, _results(dataset, _shift(1)))
    four = evaluate_coco(dataset.coco, _results(dataset, _shift(4)))
    for iou_type in ("bbox", "segm"):
        assert 0.0 < four[iou_type]["AP"] < one[iou_type]["AP"] < 100.0
        assert four[iou_type]["AP75"] < 100.0


def test_numbers_equal_a_direct_cocoeval_run(dataset) -> None:
    results = _results(dataset, _shift(2))
    metrics = evaluate_coco(dataset.coco, results)
    for iou_type, drop in (("bbox", "segmentation"), ("segm", "bbox")):
        anns = [{k: v for k, v in copy.deepcopy(r).items() if k != drop} for r in results]
        with contextlib.redirect_stdout(io.StringIO()):
            reference = COCOeval(dataset.coco, dataset.coco.loadRes(anns), iou_type)
            reference.evaluate()
            reference.accumulate()
            reference.summarize()
        for name, value in zip(STAT_NAMES, reference.stats):
            expected = value * 100 if value >= 0 else float("nan")
            assert metrics[iou_type][name] == pytest.approx(expected, nan_ok=True), name
        per_category = [c["AP"] for c in metrics[iou_type]["per_category"]]
        assert np.nanmean(per_category) == pytest.approx(metrics[iou_type]["AP"])


def test_segm_area_ranges_use_mask_areas_not_box_areas() -> None:
    """An unmatched thin mask (48 pixels: small) with a full-image box (2304 pixels: medium).

    Scored with its mask area it is a false positive among small objects, ranked above the true
    match: APs 50. Scored with its box area it would be ignored there: APs 100.
    """
    square = np.zeros((48, 48), dtype=bool)
    square[2:7, 30:35] = True
    diagonal = np.eye(48, dtype=bool)
    gt = validate_coco_instances(
        {
            "images": [{"id": 1, "file_name": "x.png", "height": 48, "width": 48}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": 1,
                    "segmentation": mask_to_rle(square),
                    "bbox": [30, 2, 5, 5],
                }
            ],
        }
    )
    inst = Instances(
        np.stack([diagonal, square]), [[0, 0, 48, 48], [30, 2, 35, 7]], [0.9, 0.5], [0, 0], ["t"]
    )
    metrics = evaluate_coco(gt, instances_to_coco_results(inst, 1, [1]), iou_types=["segm"])
    assert metrics["segm"]["APs"] == pytest.approx(50.0)
    assert metrics["segm"]["AP"] == pytest.approx(50.0)


def test_prediction_for_unknown_image_is_refused(dataset) -> None:
    results = _results(dataset, indices=[0])
    results[0] = {**results[0], "image_id": 999}
    with pytest.raises(EvaluationError, match=r"image ids 999 are not images of the ground"):
        evaluate_coco(dataset.coco, results)


def test_prediction_with_unknown_category_is_refused(dataset) -> None:
    results = _results(dataset, indices=[0])
    results[1] = {**results[1], "category_id": 1000}
    with pytest.raises(EvaluationError, match=r"category ids 1000 are not categories"):
        evaluate_coco(dataset.coco, results, iou_types=["bbox"])


def test_malformed_results_are_refused(dataset) -> None:
    results = _results(dataset, indices=[0])
    no_box = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    with pytest.raises(EvaluationError, match="no 'bbox'"):
        evaluate_coco(dataset.coco, no_box, iou_types=["bbox"])
    evaluate_coco(dataset.coco, no_box, iou_types=["segm"])  # boxes are not needed there
    wrong_size = copy.deepcopy(results)
    wrong_size[0]["segmentation"]["size"] = [10, 10]
    with pytest.raises(EvaluationError, match=r"positions 0\) have no 'segmentation'"):
        evaluate_coco(dataset.coco, wrong_size)
    with pytest.raises(EvaluationError, match="finite score"):
        evaluate_coco(dataset.coco, [{**results[0], "score": float("nan")}])
    with pytest.raises(EvaluationError, match="iou_types"):
        evaluate_coco(dataset.coco, results, iou_types=["keypoints"])


def test_ground_truth_with_dangling_category_is_refused(dataset, tmp_path) -> None:
    document = json.loads(dataset.ann_file.read_text())
    document["annotations"][0]["category_id"] = 999
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DatasetError, match="category_id is not a category of the file: 1"):
        evaluate_coco(path, [])


def test_empty_results_score_zero_with_a_warning(dataset) -> None:
    with pytest.warns(UserWarning, match="No predictions"):
        metrics = evaluate_coco(dataset.coco, [])
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == 0.0 and metrics[iou_type]["AR100"] == 0.0
    assert metrics["num_predictions"] == 0


def test_img_ids_restrict_the_evaluation_to_a_partial_run(dataset) -> None:
    results = _results(dataset, indices=[0, 2])
    everything = evaluate_coco(dataset.coco, results)
    predicted = evaluate_coco(dataset.coco, results, img_ids="predicted")
    explicit = evaluate_coco(dataset.coco, results, img_ids=[1, 3])
    assert everything["segm"]["AR100"] < 100.0
    assert predicted["segm"]["AP"] == explicit["segm"]["AP"] == pytest.approx(100.0)
    assert predicted["num_images"] == 2
    # an image that was run but got no prediction still counts
    with_empty = evaluate_coco(dataset.coco, results, img_ids=[1, 2, 3])
    assert with_empty["segm"]["AR100"] < 100.0
    with pytest.raises(EvaluationError, match="img_ids 77"):
        evaluate_coco(dataset.coco, results, img_ids=[1, 77])
    with pytest.raises(EvaluationError, match="no results"):
        evaluate_coco(dataset.coco, [], img_ids="predicted")


def test_instances_to_coco_results_by_hand() -> None:
    mask = np.zeros((5, 6), dtype=bool)
    mask[2:5, 1:4] = True
    inst = Instances(
        np.stack([mask, ~mask]),
        [[1, 2, 4, 5], [0, 0, 6, 5]],
        [0.75, 0.5],
        [1, 0],
        ["cat", "dog"],
    )
    results = instances_to_coco_results(inst, 42, [3, 7])
    assert [r["image_id"] for r in results] == [42, 42]
    assert [r["category_id"] for r in results] == [7, 3]
    assert results[0]["bbox"] == [1.0, 2.0, 3.0, 3.0]  # XYXY (exclusive) -> XYWH
    assert results[1]["bbox"] == [0.0, 0.0, 6.0, 5.0]
    assert results[0]["score"] == 0.75
    assert isinstance(results[0]["segmentation"]["counts"], str)
    assert results[0]["segmentation"]["size"] == [5, 6]
    for result, expected in zip(results, (mask, ~mask)):
        rle = {**result["segmentation"], "counts": result["segmentation"]["counts"].encode()}
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), expected)
    json.dumps(results, allow_nan=False)  # plain Python types only

    boxes_only = instances_to_coco_results(inst, 42, [3, 7], include_masks=False)
    assert all("segmentation" not in r for r in boxes_only)
    empty = Instances(np.zeros((0, 5, 6), bool), np.zeros((0, 4)), [], [], ["cat", "dog"])
    assert instances_to_coco_results(empty, 42, [3, 7]) == []
    with pytest.raises(EvaluationError, match=r"labels \[1\] but only 1 category ids"):
        instances_to_coco_results(inst, 42, [3])


def test_results_file_round_trip(dataset, tmp_path) -> None:
    results = _results(dataset, _shift(1))
    path = write_coco_results(tmp_path / "out" / "results.json", results)
    assert load_coco_results(path) == results
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
    from_files = evaluate_coco(dataset.ann_file, path)
    in_memory = evaluate_coco(dataset.coco, results)
    for iou_type in ("bbox", "segm"):
        for name in STAT_NAMES:
            assert from_files[iou_type][name] == pytest.approx(
                in_memory[iou_type][name], nan_ok=True
            )
    (tmp_path / "bad.json").write_text('{"image_id": 1}')
    with pytest.raises(EvaluationError, match="must hold a JSON list"):
        load_coco_results(tmp_path / "bad.json")


def test_table_and_json(dataset, tmp_path) -> None:
    metrics = evaluate_coco(dataset.coco, _results(dataset, _shift(1)))
    table = format_coco_table(metrics)
    header = table.splitlines()[2]
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["IoU type", *STAT_NAMES]
    assert "per category AP:" in table and dataset.class_names[0] in table
    assert f"{metrics['segm']['AP']:.2f}" in table

    document = coco_metrics_to_json(metrics)
    assert list(document) == [
        "task",
        "num_images",
        "num_predictions",
        "iou_types",
        "metrics",
        "per_category",
    ]
    assert document["metrics"]["bbox"]["APl"] is None  # NaN -> null
    assert document["metrics"]["segm"]["AP"] == pytest.approx(metrics["segm"]["AP"])
    path = write_coco_metrics(tmp_path / "metrics.json", metrics)
    assert json.loads(path.read_text()) == json.loads(json.dumps(document))
