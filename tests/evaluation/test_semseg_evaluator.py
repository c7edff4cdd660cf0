"""SemSegEvaluator in the loop: one process, JSON output, a 2-process torchrun equal to one."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from ovseg.evaluation.jsonio import write_json_atomic
from ovseg.evaluation.loop import run_evaluation
from tests.torchrun import run_torchrun

# Shared by the in-process run and the torchrun workers (written to tmp_path as a script).
WORKER = '''
import json
import sys

import numpy as np
import torch.distributed as dist

from ovseg.evaluation.loop import run_evaluation
from ovseg.evaluation.semseg_evaluator import SemSegEvaluator

CLASSES = ["sky", "tree", "road", "car", "person", "boat"]
GROUPS = {"seen": ["sky", "tree", "road"], "unseen": ["car", "person", "boat"]}


class ToyDataset:
    """7 items (odd on purpose) of varied sizes; labels 0..3 plus 255; person / boat absent."""

    def __len__(self):
        return 7

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        h, w = 4 + i, 5 + i % 3
        label = rng.integers(0, 4, size=(h, w))
        label[rng.random((h, w)) < 0.1] = 255
        noisy = np.where(rng.random((h, w)) < 0.3, rng.integers(0, 5, size=(h, w)), label)
        image = np.zeros((h, w, 3), dtype=np.uint8)
        image[..., 0] = noisy
        return {"image": image, "label": label.astype(np.uint8), "filename": f"img{i}.png"}


def predict(image):
    return image[..., 0].astype(np.int64) % 5


def make_evaluator():
    return SemSegEvaluator(CLASSES, groups=GROUPS)


if __name__ == "__main__":
    dist.init_process_group("gloo")
    results = run_evaluation(make_evaluator(), ToyDataset(), predict, out_dir=sys.argv[1])
    per_rank = {k: np.asarray(v).tolist() for k, v in results.items() if k != "groups"}
    with open(f"{sys.argv[1]}/rank{dist.get_rank()}", "w") as handle:
        json.dump(per_rank, handle)
    dist.destroy_process_group()
'''


@pytest.fixture()
def worker(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    spec = importlib.util.spec_from_file_location("semseg_eval_worker", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return script, module


def test_single_process_results_table_and_json(worker, tmp_path, capsys) -> None:
    _, mod = worker
    evaluator = mod.make_evaluator()
    evaluator.process({"label": np.zeros((2, 2), dtype=int)}, np.zeros((2, 2), dtype=int))
    out = tmp_path / "sub"
    # the loop resets the evaluator first
    results = run_evaluation(evaluator, mod.ToyDataset(), mod.predict, out_dir=out, progress=False)

    reference = mod.make_evaluator()
    for i in range(7):
        sample = mod.ToyDataset()[i]
        reference.process(sample, mod.predict(sample["image"]))
    expected = reference.evaluate()
    assert results["num_images"] == 7
    assert results["mIoU"] == expected["mIoU"]
    np.testing.assert_array_equal(results["IoU"], expected["IoU"])

    printed = capsys.readouterr().out
    assert printed.count("per class results:") == 1 and "Groups:" in printed

    doc = json.loads((out / "results.json").read_text())
    assert list(doc) == [
        "task",
        "num_images",
        "num_classes",
        "ignore_index",
        "metrics",
        "groups",
        "per_class",
        "counts",
    ]
    assert doc["num_images"] == 7 and doc["num_classes"] == 6
    assert doc["metrics"]["mIoU"] == pytest.approx(results["mIoU"])
    assert doc["groups"]["unseen"]["classes"] == ["car", "person", "boat"]
    by_class = {row["class"]: row for row in doc["per_class"]}
    assert by_class["boat"]["IoU"] is None and by_class["boat"]["Acc"] is None  # NaN -> null
    assert by_class["person"]["IoU"] == 0.0 and by_class["person"]["Acc"] is None
    assert doc["counts"]["intersect"] == reference.state()["intersect"].tolist()
    assert [p.name for p in out.iterdir()] == ["results.json"]  # no temp file left behind


def test_protocol_reset_process_merge_evaluate(worker) -> None:
    _, mod = worker
    samples = [mod.ToyDataset()[i] for i in range(7)]
    whole = mod.make_evaluator()
    for sample in samples:
        whole.process(sample, mod.predict(sample["image"]))
    # two shares merged in rank order give exactly the counts of one pass
    shares = [mod.make_evaluator(), mod.make_evaluator()]
    for i, sample in enumerate(samples):
        shares[i % 2].process(sample, mod.predict(sample["image"]))
    merged = mod.make_evaluator()
    merged.merge([share.state() for share in shares])
    for key in ("intersect", "union", "pred_area", "label_area"):
        np.testing.assert_array_equal(merged.state()[key], whole.state()[key])
    assert merged.evaluate()["mIoU"] == whole.evaluate()["mIoU"]
    whole.reset()
    assert whole.evaluate()["num_images"] == 0


def test_a_result_object_is_read_through_its_sem_seg(worker) -> None:
    _, mod = worker
    sample = mod.ToyDataset()[0]

    class Result:
        sem_seg = sample["label"].astype(np.int64)

    evaluator = mod.make_evaluator()
    evaluator.process(sample, Result())
    assert evaluator.evaluate()["aAcc"] == 100.0


def test_shape_mismatch_names_the_file(worker) -> None:
    _, mod = worker
    with pytest.raises(ValueError, match=r"img0\.png: Prediction shape"):
        run_evaluation(
            mod.make_evaluator(),
            mod.ToyDataset(),
            lambda image: np.zeros((1, 1), dtype=np.int64),
            progress=False,
        )


def test_vocabulary_of_another_size_is_refused(worker) -> None:
    from ovseg.errors import ConfigError

    _, mod = worker

    class Pipeline:
        vocabulary = ["sky", "tree"]

    with pytest.raises(ConfigError, match="vocabulary has 2 classes but the dataset 6"):
        mod.make_evaluator().check_pipeline(Pipeline())


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path) -> None:
    path = write_json_atomic(tmp_path / "r.json", {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"a": float("nan")})  # strict JSON: NaN is refused
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_two_process_torchrun_equals_one_process(worker, tmp_path) -> None:
    script, mod = worker
    single = tmp_path / "single"
    run_evaluation(
        mod.make_evaluator(), mod.ToyDataset(), mod.predict, out_dir=single, progress=False
    )

    distributed = tmp_path / "dist"
    distributed.mkdir()
    proc = run_torchrun(script, distributed)

    assert (distributed / "results.json").read_bytes() == (single / "results.json").read_bytes()
    assert proc.stdout.count("per class results:") == 1  # only rank 0 prints
    rank0 = (distributed / "rank0").read_text()
    assert rank0 == (distributed / "rank1").read_text()  # every rank returns the totals
    assert json.loads(rank0)["num_images"] == 7


def test_the_scored_pipeline_section_is_a_setting():
    from ovseg.errors import ConfigError
    from ovseg.evaluation.semseg_evaluator import SemSegEvaluator

    assert SemSegEvaluator(["a", "b"]).pipeline_key is None  # the config's `pipeline`
    assert SemSegEvaluator(["a", "b"], pipeline="semantic_painted").pipeline_key == (
        "semantic_painted"
    )
    with pytest.raises(ConfigError, match="evaluation.pipeline must name"):
        SemSegEvaluator(["a", "b"], pipeline="")
