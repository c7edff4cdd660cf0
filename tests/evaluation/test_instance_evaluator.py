"""CocoInstanceEvaluator in the loop over a tiny COCO set: oracle vs noisy predictors, partial
runs, errors, the registered evaluator, ``evaluate`` on a config, and a 2-process torchrun equal
to 1 process."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ovseg.data.coco_instances import COCOInstances
from ovseg.data.writers import write_synthetic_world
from ovseg.errors import ConfigError, EvaluationError
from ovseg.evaluation.instance_evaluator import CocoInstanceEvaluator
from ovseg.evaluation.loop import build_evaluator, evaluate, run_evaluation
from ovseg.registry import EVALUATORS
from ovseg.structures import Instances
from tests.torchrun import run_torchrun

# Predictors shared by the in-process tests and the torchrun workers (exec'd / written out).
PREDICTORS = '''
import numpy as np

from ovseg.structures import Instances


def make_predictors(dataset):
    """(oracle, noisy): look the image up and return its ground truth, exact or moved."""
    by_image = {}
    for index in range(len(dataset)):
        sample = dataset[index]
        by_image[sample["image"].tobytes()] = sample["instances"]

    def oracle(image):
        inst = by_image[image.tobytes()]
        n = len(inst["labels"])
        return Instances(inst["masks"], inst["boxes"], np.ones(n), inst["labels"],
                         dataset.class_names)

    def noisy(image):
        inst = by_image[image.tobytes()]
        n = len(inst["labels"])
        shift = np.array([2, 1, 2, 1], dtype=np.float32)
        masks = np.roll(np.roll(inst["masks"], 2, axis=2), 1, axis=1)
        return Instances(masks, inst["boxes"] + shift, np.linspace(0.9, 0.4, n),
                         inst["labels"], dataset.class_names)

    return oracle, noisy
'''

WORKER = (
    PREDICTORS
    + """

if __name__ == "__main__":
    import json
    import sys

    import torch.distributed as dist

    from ovseg.data.coco_instances import COCOInstances
    from ovseg.evaluation.instance_evaluator import CocoInstanceEvaluator
    from ovseg.evaluation.loop import run_evaluation

    dist.init_process_group("gloo")
    dataset = COCOInstances(sys.argv[1], split="val")
    _, noisy = make_predictors(dataset)
    out = sys.argv[2]
    evaluator = CocoInstanceEvaluator.from_dataset(dataset)
    metrics = run_evaluation(evaluator, dataset, noisy, out_dir=out)
    with open(f"{out}/rank{dist.get_rank()}", "w") as handle:
        json.dump({k: metrics[k]["AP"] for k in ("bbox", "segm")}, handle)
    dist.destroy_process_group()
"""
)


def evaluate_instances(predict, dataset, evaluator=None, *, indices=None, out_dir=None):
    """The loop with the dataset's COCO evaluator (or ``evaluator``), no progress bar."""
    evaluator = evaluator or CocoInstanceEvaluator.from_dataset(dataset)
    return run_evaluation(
        evaluator, dataset, predict, indices=indices, out_dir=out_dir, progress=False
    )


def _predictors(dataset):
    namespace: dict = {}
    exec(compile(PREDICTORS, "predictors", "exec"), namespace)
    return namespace["make_predictors"](dataset)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("instance_eval")
    write_synthetic_world(
        out, num_train=0, num_val=4, seed=2, image_size=48, formats=("coco",), progress=False
    )
    return out / "coco"


@pytest.fixture(scope="module")
def dataset(coco_root) -> COCOInstances:
    return COCOInstances(coco_root, split="val")


def test_oracle_scores_100_and_noise_scores_less(dataset, tmp_path, capsys) -> None:
    oracle, noisy = _predictors(dataset)
    perfect = evaluate_instances(oracle, dataset, out_dir=tmp_path)
    out, results_path = tmp_path / "results.json", tmp_path / "coco_results.json"
    for iou_type in ("bbox", "segm"):
        assert perfect[iou_type]["AP"] == pytest.approx(100.0)
        assert perfect[iou_type]["AP75"] == pytest.approx(100.0)
    assert perfect["num_images"] == 4 and perfect["num_predictions"] == 12
    printed = capsys.readouterr().out
    assert printed.count("per category AP:") == 1 and "AR100" in printed

    document = json.loads(out.read_text())
    assert document["task"] == "instance_segmentation"
    assert document["metrics"]["segm"]["AP"] == pytest.approx(100.0)
    results = json.loads(results_path.read_text())
    assert len(results) == 12
    assert [r["image_id"] for r in results] == sorted(r["image_id"] for r in results)
    assert {r["category_id"] for r in results} == {
        a["category_id"] for a in dataset.coco.anns.values()
    }

    worse = evaluate_instances(noisy, dataset)
    for iou_type in ("bbox", "segm"):
        assert 0.0 < worse[iou_type]["AP"] < 100.0


def test_dataset_reads_the_same_after_evaluating(coco_root) -> None:
    """COCOeval rewrites ground-truth polygons as RLEs in place; the reader must cope."""
    write_synthetic_world(
        coco_root.parent / "polygons",
        num_train=0,
        num_val=2,
        seed=4,
        image_size=48,
        formats=("coco",),
        progress=False,
        coco_segmentation="polygon",
    )
    dataset = COCOInstances(coco_root.parent / "polygons" / "coco", split="val")
    before = [dataset[i]["instances"]["masks"] for i in range(len(dataset))]
    oracle, _ = _predictors(dataset)
    assert evaluate_instances(oracle, dataset)["segm"]["AP"] == 100.0
    assert any(isinstance(a["segmentation"], dict) for a in dataset.coco.anns.values())
    for index, masks in enumerate(before):
        np.testing.assert_array_equal(dataset[index]["instances"]["masks"], masks)


def test_partial_run_is_scored_on_its_images(dataset) -> None:
    oracle, _ = _predictors(dataset)
    metrics = evaluate_instances(oracle, dataset, indices=[1, 3])
    assert metrics["num_images"] == 2
    assert metrics["segm"]["AP"] == pytest.approx(100.0)
    assert metrics["num_predictions"] == len(dataset.coco.getAnnIds(imgIds=[2, 4]))


def test_wrong_mask_size_names_the_image(dataset) -> None:
    def small_masks(image):
        return Instances(np.ones((1, 8, 8), bool), [[0, 0, 8, 8]], [1.0], [0], dataset.class_names)

    with pytest.raises(EvaluationError, match=r"000000000001\.jpg: Masks are 8x8 but image 1"):
        evaluate_instances(small_masks, dataset)
    # boxes only: masks are not looked at
    boxes_only = CocoInstanceEvaluator(dataset.coco, dataset.category_ids, iou_types="bbox")
    metrics = evaluate_instances(small_masks, dataset, boxes_only)
    assert "segm" not in metrics and metrics["bbox"]["AP"] < 100.0


def test_predict_must_return_instances_of_the_dataset_classes(dataset) -> None:
    with pytest.raises(TypeError, match="must return ovseg.structures.Instances"):
        evaluate_instances(lambda image: {"masks": []}, dataset)

    def two_classes(image):
        return Instances(np.zeros((0, 48, 48), bool), np.zeros((0, 4)), [], [], ["a", "b"])

    with pytest.raises(EvaluationError, match="name 2 classes but there are 64 categories"):
        evaluate_instances(two_classes, dataset)


def test_evaluator_checks(dataset) -> None:
    oracle, _ = _predictors(dataset)
    evaluator = CocoInstanceEvaluator(dataset.ann_file)  # a path works as ground truth
    assert evaluator.category_ids == dataset.category_ids
    with pytest.raises(EvaluationError, match="No image was processed"):
        evaluator.evaluate()
    sample = dataset[0]
    with pytest.raises(EvaluationError, match="image id 999 is not in the ground truth"):
        evaluator.process({"image_id": 999}, oracle(sample["image"]))
    evaluator.process(sample, oracle(sample["image"]))
    evaluator.process(sample, oracle(sample["image"]))
    with pytest.raises(EvaluationError, match=r"Images \[1\] were processed more than once"):
        evaluator.evaluate()
    evaluator.reset()
    evaluator.process(sample, oracle(sample["image"]))
    assert evaluator.evaluate()["segm"]["AP"] == pytest.approx(100.0)
    # shares merged in rank order are put in image-id order
    other = CocoInstanceEvaluator(dataset.coco, dataset.category_ids)
    second = dataset[1]
    other.process(second, oracle(second["image"]))
    merged = CocoInstanceEvaluator(dataset.coco, dataset.category_ids)
    merged.merge([other.state(), evaluator.state()])
    assert merged.image_ids == [sample["image_id"], second["image_id"]]
    assert [r["image_id"] for r in merged.results()] == sorted(
        r["image_id"] for r in merged.results()
    )
    assert merged.evaluate()["num_images"] == 2
    with pytest.raises(EvaluationError, match=r"category_ids \[999\]"):
        CocoInstanceEvaluator(dataset.coco, [1, 999])


def test_registered_evaluator_and_dispatch_rule(dataset) -> None:
    built = EVALUATORS.build(
        {"type": "CocoInstanceEvaluator", "iou_types": ["segm"]},
        gt=dataset.coco,
        category_ids=dataset.category_ids,
    )
    assert isinstance(built, CocoInstanceEvaluator) and built.iou_types == ["segm"]
    chosen = build_evaluator({"type": "coco_ap", "iou_types": ["bbox"], "progress": False}, dataset)
    assert isinstance(chosen, CocoInstanceEvaluator) and chosen.iou_types == ["bbox"]
    assert chosen.vocabulary == dataset.class_names
    with pytest.raises(ConfigError, match="needs a COCO dataset"):
        build_evaluator({"type": "CocoInstanceEvaluator"}, [{"image": None}])


ORACLE_PIPELINE = '''
"""An instance pipeline that answers with the ground truth (to test the config runner)."""

import numpy as np

from ovseg.data.coco_instances import COCOInstances
from ovseg.registry import PIPELINES
from ovseg.structures import Instances


@PIPELINES.register()
class GroundTruthInstancePipeline:
    def __init__(self, vocabulary, root, split):
        dataset = COCOInstances(root, split=split)
        self.vocabulary = list(vocabulary)
        self.by_image = {}
        for index in range(len(dataset)):
            sample = dataset[index]
            self.by_image[sample["image"].tobytes()] = sample["instances"]

    def __call__(self, image):
        inst = self.by_image[image.tobytes()]
        n = len(inst["labels"])
        return Instances(inst["masks"], inst["boxes"], np.ones(n), inst["labels"], self.vocabulary)
'''


def test_config_runner_end_to_end(coco_root, tmp_path, monkeypatch, capsys) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "ovseg_gt_instance_pipeline.py").write_text(textwrap.dedent(ORACLE_PIPELINE))
    monkeypatch.syspath_prepend(str(plugins))
    config = {
        "custom_imports": ["ovseg_gt_instance_pipeline"],
        "pipelines": {
            "instance": {
                "type": "GroundTruthInstancePipeline",
                "root": str(coco_root),
                "split": "val",
            }
        },
        "data": {"test": {"type": "COCOInstances", "root": str(coco_root), "split": "val"}},
        "evaluation": {"type": "CocoInstanceEvaluator", "progress": False},
    }
    work_dir = tmp_path / "work"
    metrics = evaluate(config, work_dir=work_dir, limit=3)
    assert metrics["num_images"] == 3
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)
    assert metrics["segm"]["AP"] == pytest.approx(100.0)
    assert sorted(p.name for p in work_dir.iterdir()) == [
        "coco_results.json",
        "config.yaml",
        "results.json",
    ]
    assert json.loads((work_dir / "results.json").read_text())["num_images"] == 3
    assert "results written to" in capsys.readouterr().out


def test_two_process_torchrun_equals_one_process(coco_root, dataset, tmp_path) -> None:
    _, noisy = _predictors(dataset)
    single = tmp_path / "single"
    evaluate_instances(noisy, dataset, out_dir=single)

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    distributed = tmp_path / "dist"
    distributed.mkdir()
    proc = run_torchrun(script, coco_root, distributed)

    for name in ("results.json", "coco_results.json"):
        assert (distributed / name).read_bytes() == (single / name).read_bytes()
    assert proc.stdout.count("per category AP:") == 1  # only rank 0 prints
    rank0 = (distributed / "rank0").read_text()
    assert rank0 == (distributed / "rank1").read_text()  # every rank returns the metrics
    assert 0.0 < json.loads(rank0)["segm"] < 100.0


def test_group_means_are_reported_and_saved(coco_root, dataset, tmp_path, monkeypatch) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "ovseg_gt_instance_pipeline.py").write_text(textwrap.dedent(ORACLE_PIPELINE))
    monkeypatch.syspath_prepend(str(plugins))
    unseen = [dataset.class_names[0]]
    config = {
        "custom_imports": ["ovseg_gt_instance_pipeline"],
        "pipelines": {
            "instance": {"type": "GroundTruthInstancePipeline", "root": str(coco_root), "split": "val"}
        },
        "data": {"test": {"type": "COCOInstances", "root": str(coco_root), "split": "val"}},
        "evaluation": {"type": "CocoInstanceEvaluator", "progress": False, "groups": {"unseen": unseen}},
    }  # fmt: skip
    metrics = evaluate(config, work_dir=tmp_path / "work")
    assert metrics["groups"]["segm"]["seen"] == pytest.approx(100.0)
    assert metrics["groups_ap50"]["segm"]["seen"] == pytest.approx(100.0)
    saved = json.loads((tmp_path / "work" / "results.json").read_text())
    assert set(saved["groups"]["bbox"]) == {"seen", "unseen"}
    assert set(saved["groups_ap50"]["bbox"]) == {"seen", "unseen"}
