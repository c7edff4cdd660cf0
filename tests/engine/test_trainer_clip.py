"""End-to-end engine tests on a tiny open_clip model (CPU): DDP equivalence, exact resume.

The runs here use SGD with momentum. It has optimiser state that must survive a resume, and it
turns gradients into weights linearly, so the 1-process vs 2-process comparison measures the
gradient combination itself. (Adam divides by sqrt(v): for parameters whose exact gradient is
zero, e.g. attention key biases, it scales float round-off up to lr-sized steps, so Adam weights
of a 2-process run drift by ~1e-5 from one process although the gradients agree to ~1e-9.
AdamW resume is covered with a toy task in test_trainer_toy.py.)
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from ovseg.engine import train
from tests.engine.clip_tiny import tiny_train_config
from tests.torchrun import run_torchrun

REPO = Path(__file__).resolve().parents[2]
SGD = {"type": "SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}


class _Killed(Exception):
    """Stands in for the job being killed."""


def _kill_after(n: int):
    def hook(iteration: int) -> None:
        if iteration == n:
            raise _Killed(f"killed after iteration {iteration}")

    return hook


def _train_records(work_dir: Path) -> list[dict]:
    lines = (work_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["mode"] == "train"]


def _config(root: Path, work_dir: Path, **train_cfg) -> dict:
    # 32 samples, global batch 8: 4 iterations per epoch, so 7 iterations cross an epoch
    # 11 validation pairs, evaluated at the end: 6 + 5 per rank in the 2-process run
    return tiny_train_config(root, work_dir, val=True, optimizer=dict(SGD), train=train_cfg)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-process run of 7 iterations."""
    root = tmp_path_factory.mktemp("clip_engine")
    result = train(_config(root, root / "reference"))
    return root, load_file(result["export"]), _train_records(root / "reference"), result["metrics"]


def _assert_same_weights(got: dict, want: dict, tol: float = 0.0) -> None:
    """tol 0: bitwise (a resumed run repeats the same ops in the same order); else rtol = atol."""
    assert got.keys() == want.keys()
    for key in want:
        if tol == 0.0:
            assert torch.equal(got[key], want[key]), key
        else:
            torch.testing.assert_close(got[key], want[key], rtol=tol, atol=tol, msg=key)


def test_reference_run_writes_its_outputs(reference):
    root, weights, records, metrics = reference
    work = root / "reference"
    assert [r["iter"] for r in records] == list(range(1, 8))
    assert records[0]["lr"] == pytest.approx(0.025)  # warmup iteration 0 of 2
    assert records[-1]["loss"] < records[0]["loss"]
    assert OmegaConf.load(work / "config.yaml").task.model_name == "ovseg-test-tiny-clip"
    assert (work / "last_checkpoint").read_text().strip() == "iter_0000007.pth"
    assert "logit_scale" in weights and "visual.conv1.weight" in weights
    assert set(metrics) == {"i2t_top1", "i2t_top5", "t2i_top1", "t2i_top5"}


def test_killed_run_resumes_exactly_and_skips_a_truncated_checkpoint(reference, tmp_path, caplog):
    root, want, want_records, _ = reference
    killed = tmp_path / "killed"
    cfg = _config(root, killed, ckpt_interval=3, keep_last=2)
    with pytest.raises(_Killed):
        train(cfg, hooks=[_kill_after(6)])  # checkpoints at 3 (epoch 0, step 3) and 6 (1, 2)
    assert (killed / "last_checkpoint").read_text().strip() == "iter_0000006.pth"
    truncated = tmp_path / "truncated"
    shutil.copytree(killed, truncated)

    # 1) plain resume from iteration 6, mid-epoch
    result = train(cfg, resume=True)
    assert result["iteration"] == 7
    _assert_same_weights(load_file(result["export"]), want)

    # 2) the newest checkpoint is cut short on disk: warn, fall back to iteration 3
    newest = truncated / "iter_0000006.pth"
    with open(newest, "r+b") as f:
        f.truncate(newest.stat().st_size // 2)
    cfg["work_dir"] = str(truncated)
    with caplog.at_level(logging.WARNING, logger="ovseg.engine"):
        result = train(cfg, resume=True)
    assert "iter_0000006.pth" in caplog.text and "previous" in caplog.text
    _assert_same_weights(load_file(result["export"]), want)
    records = _train_records(truncated)
    assert [r["iter"] for r in records] == list(range(1, 8))  # lines 4-6 were replayed once
    assert [r["loss"] for r in records] == [r["loss"] for r in want_records]
    # keep_last=2: the re-run rewrote iteration 6, and 7 was added; 3 was pruned
    assert sorted(p.name for p in truncated.glob("iter_*.pth")) == [
        "iter_0000006.pth",
        "iter_0000007.pth",
    ]


def test_two_processes_match_one_process(reference, tmp_path):
    root, want, want_records, want_metrics = reference
    config_path = tmp_path / "config.yaml"
    OmegaConf.save(OmegaConf.create(_config(root, tmp_path / "unused")), config_path)
    work = tmp_path / "ddp"
    run_torchrun(
        "-m", "ovseg.engine", config_path, "--work-dir", work, "train.device=cpu", cwd=REPO
    )

    saved = OmegaConf.load(work / "config.yaml")
    assert saved.work_dir == str(work) and saved.train.device == "cpu"
    # global batch 8 = 2 ranks x 4: the same samples per step, so the same global loss ...
    # (up to float32 order: each rank sums its half, gloo adds the halves; losses are ~2, so
    # 1e-5 is ~80 ulps; the weights (|w| <= ~2.7, logit scale) end <= 7e-7 apart after 7 SGD
    # steps (AVX-512 and AVX2 paths), bound 1e-5 absolute plus 1e-5 relative)
    records = _train_records(work)
    assert [r["loss"] for r in records] == pytest.approx(
        [r["loss"] for r in want_records], abs=1e-5
    )
    # ... and, with gradients through the feature gather, the same weights
    _assert_same_weights(load_file(work / "model_final.safetensors"), want, tol=1e-5)
    # sharded evaluation, gathered over ranks, scores all 11 pairs like one process does
    val = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()][-1]
    assert val.pop("mode") == "val" and val.pop("iter") == 7
    # retrieval ranks of 11 pairs: the same unless two cosines of the ~1e-6-apart models tie
    assert val == pytest.approx(want_metrics)
