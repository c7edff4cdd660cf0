"""SemSegMetric: hand-computed counts, an independent confusion-matrix check, state / merge."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ovseg.errors import ConfigError
from ovseg.evaluation.semseg import SemSegMetric, intersect_and_union, nanmean
from ovseg.registry import EVALUATORS

NAMES4 = ["sky", "tree", "road", "boat"]

# Valid (label, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0); the two 255 pixels are
# dropped even though something was predicted there; "boat" (3) appears nowhere.
LABEL = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
PRED = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])


def test_counts_by_hand() -> None:
    inter, union, pred_area, label_area = intersect_and_union(PRED, LABEL, 4, 255)
    assert inter.tolist() == [1, 2, 1, 0]
    assert pred_area.tolist() == [2, 3, 1, 0]
    assert label_area.tolist() == [2, 2, 2, 0]
    assert union.tolist() == [3, 3, 2, 0]
    assert inter.dtype == np.int64


def test_metrics_by_hand() -> None:
    metric = SemSegMetric(4, NAMES4)
    metric.process(PRED, LABEL)
    res = metric.compute()
    np.testing.assert_allclose(res["IoU"][:3], [100 / 3, 200 / 3, 50.0])
    np.testing.assert_allclose(res["Acc"][:3], [50.0, 100.0, 50.0])
    assert np.isnan(res["IoU"][3]) and np.isnan(res["Acc"][3])
    assert res["mIoU"] == pytest.approx(50.0)  # mean over the 3 defined classes, not 4
    assert res["mAcc"] == pytest.approx(200 / 3)
    assert res["aAcc"] == pytest.approx(400 / 6)
    assert res["num_images"] == 1


def test_predicted_but_absent_class_has_zero_iou_and_nan_acc() -> None:
    metric = SemSegMetric(2, ["a", "b"])
    metric.process(np.array([[0, 1, 1]]), np.array([[0, 0, 0]]))
    res = metric.compute()
    assert res["IoU"][1] == 0.0
    assert np.isnan(res["Acc"][1])
    assert res["mIoU"] == pytest.approx((100 / 3 + 0.0) / 2)
    assert res["mAcc"] == pytest.approx(100 / 3)


def test_out_of_range_values_leave_only_their_own_histogram() -> None:
    # pred -1 and 5 are outside [0, 3): not in pred_area, but the label pixel still counts.
    inter, union, pred_area, label_area = intersect_and_union(
        np.array([-1, 5, 1]), np.array([0, 1, 1]), 3, 255
    )
    assert inter.tolist() == [0, 1, 0]
    assert pred_area.tolist() == [0, 1, 0]
    assert label_area.tolist() == [1, 2, 0]
    assert union.tolist() == [1, 2, 0]


def test_uint8_label_and_custom_ignore_index() -> None:
    label = np.array([[0, 1], [7, 7]], dtype=np.uint8)
    pred = np.array([[0, 0], [1, 1]], dtype=np.uint8)
    inter, _, pred_area, label_area = intersect_and_union(pred, label, 2, ignore_index=7)
    assert inter.tolist() == [1, 0]
    assert pred_area.tolist() == [2, 0]
    assert label_area.tolist() == [1, 1]


def test_torch_inputs_match_numpy() -> None:
    a = SemSegMetric(4, NAMES4)
    b = SemSegMetric(4, NAMES4)
    a.process(PRED, LABEL)
    b.process(torch.from_numpy(PRED), torch.from_numpy(LABEL).to(torch.uint8))
    for key in ("intersect", "union", "pred_area", "label_area"):
        assert a.state()[key].tolist() == b.state()[key].tolist()


def _reference_confusion(preds, labels, num_classes, ignore):
    """Independent reference: a C x C confusion matrix filled pixel by pixel with np.add.at."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, lab in zip(preds, labels):
        keep = lab != ignore
        np.add.at(cm, (lab[keep], p[keep]), 1)
    return cm


def test_matches_independent_confusion_matrix_on_random_data() -> None:
    rng = np.random.default_rng(0)
    num_classes, ignore = 7, 255
    preds, labels = [], []
    metric = SemSegMetric(num_classes, [f"c{i}" for i in range(num_classes)], ignore)
    for _ in range(5):
        h, w = rng.integers(3, 20, size=2)
        # class 6 never appears in labels nor predictions -> NaN; class 5 only predicted
        label = rng.integers(0, 5, size=(h, w))
        label[rng.random((h, w)) < 0.15] = ignore
        pred = rng.integers(0, 6, size=(h, w))
        preds.append(pred)
        labels.append(label)
        metric.process(pred, label)

    cm = _reference_confusion(preds, labels, num_classes, ignore)
    tp = np.diag(cm).astype(float)
    gt = cm.sum(axis=1).astype(float)
    pr = cm.sum(axis=0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (gt + pr - tp) * 100
        acc = tp / gt * 100
    res = metric.compute()
    state = metric.state()
    assert state["intersect"].tolist() == np.diag(cm).tolist()
    assert state["label_area"].tolist() == cm.sum(axis=1).tolist()
    assert state["pred_area"].tolist() == cm.sum(axis=0).tolist()
    np.testing.assert_allclose(res["IoU"], iou, equal_nan=True)
    np.testing.assert_allclose(res["Acc"], acc, equal_nan=True)
    assert np.isnan(res["IoU"][6]) and res["IoU"][5] == 0.0 and np.isnan(res["Acc"][5])
    assert res["mIoU"] == pytest.approx(np.nanmean(iou))
    assert res["mAcc"] == pytest.approx(np.nanmean(acc))
    assert res["aAcc"] == pytest.approx(tp.sum() / gt.sum() * 100)


def test_groups() -> None:
    metric = SemSegMetric(4, NAMES4, groups={"seen": ["sky", "road"], "unseen": ["tree", "boat"]})
    metric.process(PRED, LABEL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = metric.compute()
    assert res["groups"]["seen"]["mIoU"] == pytest.approx((100 / 3 + 50) / 2)
    assert res["groups"]["seen"]["mAcc"] == pytest.approx(50.0)
    assert res["groups"]["unseen"]["mIoU"] == pytest.approx(200 / 3)  # boat is NaN, skipped
    assert list(res["groups"]) == ["seen", "unseen"]
    assert metric.group_classes() == {"seen": ["sky", "road"], "unseen": ["tree", "boat"]}


def test_all_nan_group_is_nan_without_warning() -> None:
    metric = SemSegMetric(4, NAMES4, groups={"empty": ["boat"]})
    metric.process(PRED, LABEL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = metric.compute()
        assert np.isnan(nanmean(np.array([np.nan, np.nan])))
    assert np.isnan(res["groups"]["empty"]["mIoU"])


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="class names"):
        SemSegMetric(3, ["a", "b"])
    with pytest.raises(ConfigError, match="not in class_names"):
        SemSegMetric(2, ["a", "b"], groups={"seen": ["a", "zebra"]})
    metric = SemSegMetric(2, ["a", "b"])
    with pytest.raises(ValueError, match=r"shape \(2, 3\) does not match label shape \(3, 2\)"):
        metric.process(np.zeros((2, 3), dtype=int), np.zeros((3, 2), dtype=int))
    with pytest.raises(TypeError, match="integer"):
        metric.process(np.zeros((2, 2), dtype=np.float32), np.zeros((2, 2), dtype=int))
    assert metric.num_images == 0


def test_state_merge_equals_single_pass() -> None:
    rng = np.random.default_rng(1)
    pairs = [(rng.integers(0, 3, (4, 5)), rng.integers(0, 3, (4, 5))) for _ in range(4)]
    whole, first, second = (SemSegMetric(3, ["a", "b", "c"]) for _ in range(3))
    for i, (p, lab) in enumerate(pairs):
        whole.process(p, lab)
        (first if i % 2 else second).process(p, lab)
    first.merge(second)
    merged_from_state = SemSegMetric(3, ["a", "b", "c"])
    merged_from_state.merge(whole.state())
    for m in (first, merged_from_state):
        assert {k: v.tolist() for k, v in m.state().items() if k != "num_images"} == {
            k: v.tolist() for k, v in whole.state().items() if k != "num_images"
        }
        assert m.num_images == 4
    # state() is a copy
    snapshot = whole.state()
    snapshot["intersect"][:] = 0
    assert whole.state()["intersect"].sum() > 0
    with pytest.raises(ValueError, match="same class list"):
        first.merge(SemSegMetric(2, ["a", "b"]))


def test_all_reduce_without_distributed_is_noop_and_reset_clears() -> None:
    metric = SemSegMetric(4, NAMES4)
    metric.process(PRED, LABEL)
    before = metric.state()
    metric.all_reduce()
    metric.all_reduce()
    assert metric.state()["intersect"].tolist() == before["intersect"].tolist()
    metric.reset()
    assert metric.num_images == 0 and metric.state()["union"].sum() == 0
    assert np.isnan(metric.compute()["aAcc"])


def test_its_evaluator_is_registered_under_the_metric_name() -> None:
    from ovseg.evaluation.semseg_evaluator import SemSegEvaluator

    evaluator = EVALUATORS.build({"type": "SemSegMetric", "class_names": ["a", "b"]})
    assert (
        isinstance(evaluator, SemSegEvaluator)
        and EVALUATORS.get("SemSegEvaluator") is SemSegEvaluator
    )
    assert isinstance(evaluator.metric, SemSegMetric) and evaluator.metric.num_classes == 2
