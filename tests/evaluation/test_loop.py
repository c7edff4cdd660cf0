"""``evaluate``: the embedded shapes-tiny preset end to end on a few synthetic scenes (semantic,
referring, instance), and how an ``evaluation`` section is checked."""

from __future__ import annotations

import json

import pytest
import yaml

from ovseg.errors import ConfigError, UnknownComponentError
from ovseg.evaluation.loop import build_evaluator, evaluate, evaluator_names
from ovseg.evaluation.semseg_evaluator import SemSegEvaluator

UNSEEN = ["red triangle", "orange cross", "yellow circle", "green star"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from ovseg.data.writers import write_synthetic_world

    root = tmp_path_factory.mktemp("loop_synth")
    write_synthetic_world(
        root, num_train=0, num_val=2, seed=7, image_size=64, formats=("ade20k", "coco"),
        progress=False,
    )  # fmt: skip
    return root


def _config(test: dict, evaluation: dict, folder, **extra) -> str:
    """A config file on the embedded preset (``_base_`` is resolved for files)."""
    path = folder / "eval.yaml"
    config = {"_base_": "shapes-tiny", "data": {"test": test}, "evaluation": evaluation, **extra}
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_semantic_end_to_end(synth, tmp_path, capsys):
    config = _config(
        {"type": "ADE20KDataset", "root": str(synth), "split": "validation"},
        {"groups": "auto", "progress": False},
        tmp_path,
    )
    tmp_path = tmp_path / "work"
    results = evaluate(config, work_dir=tmp_path, limit=1)
    printed = capsys.readouterr().out
    assert "per class results:" in printed and "mIoU" in printed
    assert f"results written to {tmp_path / 'results.json'}" in printed
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["task"] == "semantic_segmentation" and saved["num_images"] == 1
    assert saved["metrics"]["mIoU"] == pytest.approx(results["mIoU"])
    # the embedded CLIP was trained on these scenes: far above chance over 64+ classes
    assert saved["metrics"]["aAcc"] > 30.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "results.json"]


def test_referring_end_to_end(synth, tmp_path, capsys):
    config = _config(
        {"type": "COCOInstances", "root": str(synth / "coco"), "split": "val"},
        {"type": "ReferringMetric", "groups": {"unseen": UNSEEN}, "progress": False},
        tmp_path,
    )
    tmp_path = tmp_path / "work"
    results = evaluate(config, work_dir=tmp_path, limit=1)
    assert results["num_images"] == 1 and results["overall"]["num_samples"] > 0
    assert 0.0 <= results["overall"]["gIoU"] <= 100.0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["overall"]["num_samples"] == results["overall"]["num_samples"]
    assert set(saved["groups"]) == {"seen", "unseen"}
    assert "gIoU" in capsys.readouterr().out


def test_instance_end_to_end(synth, tmp_path, capsys):
    config = _config(
        {"type": "COCOInstances", "root": str(synth / "coco"), "split": "val"},
        {"type": "CocoInstanceEvaluator", "groups": {"unseen": UNSEEN}, "progress": False},
        tmp_path,
        vocabulary=None,  # the dataset's classes
    )
    tmp_path = tmp_path / "work"
    results = evaluate(config, work_dir=tmp_path, limit=1)
    assert results["num_images"] == 1 and set(results["iou_types"]) == {"bbox", "segm"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "coco_results.json",
        "config.yaml",
        "results.json",
    ]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["task"] == "instance_segmentation" and set(saved["groups"]["segm"]) == {
        "seen",
        "unseen",
    }
    entries = json.loads((tmp_path / "coco_results.json").read_text())
    assert len(entries) == results["num_predictions"]
    assert "per category AP:" in capsys.readouterr().out


def test_vocab_free_end_to_end(synth, tmp_path, capsys):
    """The preset names its text database: names are searched, then matched to the classes."""
    config = _config(
        {"type": "ADE20KDataset", "root": str(synth), "split": "validation"},
        {"type": "VocabFreeEvaluator", "progress": False},
        tmp_path,
    )
    results = evaluate(config, work_dir=tmp_path / "work", limit=1)
    assert results["num_images"] == 1 and results["num_predicted_names"] > 0
    assert results["naming"]["num_samples"] > 0 and 0.0 <= results["matched_mIoU"] <= 100.0
    saved = json.loads((tmp_path / "work" / "results.json").read_text())
    assert saved["task"] == "vocab_free_segmentation" and saved["matching"] == results["matching"]
    assert "matched mIoU" in capsys.readouterr().out


def test_unknown_evaluator_is_refused_with_a_close_match(synth, tmp_path):
    config = _config(
        {"type": "ADE20KDataset", "root": str(synth), "split": "validation"},
        {"type": "CocoInstanceEvaluater"},
        tmp_path,
    )
    with pytest.raises(UnknownComponentError, match="Did you mean 'CocoInstanceEvaluator'"):
        evaluate(config, work_dir=tmp_path / "work")
    assert not (tmp_path / "work").exists()  # refused before anything was built or written


def test_unknown_evaluator_on_the_command_line(synth, tmp_path, capsys):
    from ovseg.cli import main

    path = _config(
        {"type": "ADE20KDataset", "root": str(synth), "split": "validation"},
        {"type": "SemSegMetrik"},
        tmp_path,
    )
    assert main(["eval", path, "--work-dir", str(tmp_path / "out")]) == 2
    assert "Did you mean 'SemSegMetric'" in capsys.readouterr().err


class _Classes:
    class_names = ["a", "b"]
    category_ids = [1, 2]


def test_evaluation_settings_are_checked():
    assert isinstance(build_evaluator(None, _Classes()), SemSegEvaluator)  # the default
    with pytest.raises(ConfigError, match="Cannot build evaluator 'SemSegEvaluator'.*phrase"):
        build_evaluator({"phrase": "{}"}, _Classes())
    with pytest.raises(ConfigError, match="must contain"):
        build_evaluator({"type": "ReferringMetric", "phrase": "no slot"}, _Classes())
    names = evaluator_names()
    for name in ("SemSegEvaluator", "CocoInstanceEvaluator", "ReferringMetric"):
        assert name in names
    assert "VocabFreeEvaluator" in names


def test_a_bad_limit_is_refused(synth, tmp_path):
    config = _config(
        {"type": "ADE20KDataset", "root": str(synth), "split": "validation"}, {}, tmp_path
    )
    with pytest.raises(ConfigError, match="limit must be at least 1"):
        evaluate(config, work_dir=tmp_path / "work", limit=0)


FAILING_WORKER = '''
import sys

import torch.distributed as dist

from ovseg.errors import EvaluationError
from ovseg.evaluation.evaluator import DatasetEvaluator
from ovseg.evaluation.loop import run_evaluation


class Counting(DatasetEvaluator):
    """Counts images; evaluating fails (as a metric with nothing valid might)."""

    def reset(self):
        self.count = 0

    def process(self, inputs, outputs):
        self.count += 1

    def state(self):
        return self.count

    def merge(self, states):
        self.count = sum(states)

    def evaluate(self):
        raise ValueError(f"cannot score {self.count} images")


if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        run_evaluation(Counting(), [{"image": i} for i in range(5)], lambda image: image)
    except (ValueError, EvaluationError) as exc:
        with open(f"{sys.argv[1]}/rank{rank}", "w") as handle:
            handle.write(f"{type(exc).__name__}: {exc}")
    dist.destroy_process_group()
'''


def test_an_error_while_evaluating_reaches_every_rank(tmp_path):
    from tests.torchrun import run_torchrun

    script = tmp_path / "worker.py"
    script.write_text(FAILING_WORKER)
    run_torchrun(script, tmp_path, timeout=120)
    # rank 0 merged the 3 + 2 images and raised; rank 1 heard of it instead of waiting
    assert (tmp_path / "rank0").read_text() == "ValueError: cannot score 5 images"
    assert (tmp_path / "rank1").read_text() == (
        "EvaluationError: Rank 0 could not evaluate: ValueError: cannot score 5 images"
    )
