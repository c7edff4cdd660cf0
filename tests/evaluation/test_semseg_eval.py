"""evaluate_semantic: single process, JSON output, and a 2-process torchrun equal to 1 process."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from ovseg.evaluation.semseg_eval import evaluate_semantic, write_json_atomic
from tests.torchrun import run_torchrun

# Shared by the in-process run and the torchrun workers (written to tmp_path as a script).
WORKER = '''
import json
import sys

import numpy as np
import torch.distributed as dist

from ovseg.evaluation.semseg import SemSegMetric
from ovseg.evaluation.semseg_eval import evaluate_semantic

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


def make_metric():
    return SemSegMetric(len(CLASSES), CLASSES, groups=GROUPS)


if __name__ == "__main__":
    dist.init_process_group("gloo")
    results = evaluate_semantic(predict, ToyDataset(), make_metric(), out_json=sys.argv[1])
    per_rank = {k: np.asarray(v).tolist() for k, v in results.items() if k != "groups"}
    with open(f"{sys.argv[1]}.rank{dist.get_rank()}", "w") as handle:
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
    metric = mod.make_metric()
    metric.process(np.zeros((2, 2), dtype=int), np.zeros((2, 2), dtype=int))  # reset first
    out = tmp_path / "sub" / "res.json"
    results = evaluate_semantic(mod.predict, mod.ToyDataset(), metric, out_json=out, progress=False)

    reference = mod.make_metric()
    for i in range(7):
        sample = mod.ToyDataset()[i]
        reference.process(mod.predict(sample["image"]), sample["label"])
    expected = reference.compute()
    assert results["num_images"] == 7
    assert results["mIoU"] == expected["mIoU"]
    np.testing.assert_array_equal(results["IoU"], expected["IoU"])

    printed = capsys.readouterr().out
    assert printed.count("per class results:") == 1 and "Groups:" in printed

    doc = json.loads(out.read_text())
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
    assert [p.name for p in out.parent.iterdir()] == ["res.json"]  # no temp file left behind


def test_shape_mismatch_names_the_file(worker) -> None:
    _, mod = worker
    with pytest.raises(ValueError, match=r"img0\.png: Prediction shape"):
        evaluate_semantic(
            lambda image: np.zeros((1, 1), dtype=np.int64),
            mod.ToyDataset(),
            mod.make_metric(),
            progress=False,
        )


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path) -> None:
    path = write_json_atomic(tmp_path / "r.json", {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"a": float("nan")})  # strict JSON: NaN is refused
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_two_process_torchrun_equals_one_process(worker, tmp_path) -> None:
    script, mod = worker
    single = tmp_path / "single.json"
    evaluate_semantic(
        mod.predict, mod.ToyDataset(), mod.make_metric(), out_json=single, progress=False
    )

    distributed = tmp_path / "dist.json"
    proc = run_torchrun(script, distributed)

    assert distributed.read_bytes() == single.read_bytes()
    assert proc.stdout.count("per class results:") == 1  # only rank 0 prints
    rank0 = Path(f"{distributed}.rank0").read_text()
    assert rank0 == Path(f"{distributed}.rank1").read_text()  # every rank returns the totals
    assert json.loads(rank0)["num_images"] == 7
