"""Engine behaviour on a toy regression task (fast): accumulation, AdamW + dropout resume, hooks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ovseg.engine import train
from ovseg.engine.checkpoint import load_training_checkpoint
from ovseg.errors import ConfigError, DatasetError
from ovseg.registry import DATASETS, TASKS
from ovseg.weights import save_state_dict


@TASKS.register("_EngineToyRegression")
class ToyRegression(nn.Module):
    """y ~ w.x + b with dropout on the input (consumes the global torch RNG every step)."""

    def __init__(self, dim: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)
        self.dropout = nn.Dropout(dropout)

    def collate(self, samples):
        return {
            "x": torch.stack([s["x"] for s in samples]),
            "y": torch.stack([s["y"] for s in samples]),
        }

    def forward(self, batch):
        pred = self.linear(self.dropout(batch["x"])).squeeze(1)
        loss = ((pred - batch["y"]) ** 2).mean()
        return {"loss": loss, "abs_err": (pred - batch["y"]).abs().mean().detach()}

    def export(self, path):
        save_state_dict(self.state_dict(), path)


@DATASETS.register("_EngineToyPoints")
class ToyPoints:
    """``n`` fixed points; each read adds random jitter drawn from the global torch RNG."""

    def __init__(self, n: int = 24, dim: int = 4, transform=None) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x.sum(dim=1) + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index] + 0.05 * torch.randn(self.x.shape[1]), "y": self.y[index]}


def toy_config(work_dir, *, dropout=0.0, batch_size=8, optimizer=None, **train_cfg):
    return {
        "task": {"type": "_EngineToyRegression", "dropout": dropout},
        "data": {"train": {"type": "_EngineToyPoints"}, "batch_size": batch_size, "num_workers": 0},
        "optimizer": optimizer or {"type": "AdamW", "lr": 0.05, "weight_decay": 0.01},
        "schedule": {"type": "poly", "power": 1.0, "warmup_iters": 2},
        "train": {"max_iters": 9, "log_interval": 1, "seed": 3, **train_cfg},
        "work_dir": str(work_dir),
    }


class _Killed(Exception):
    pass


def _kill_after(n):
    def hook(iteration):
        if iteration == n:
            raise _Killed

    return hook


def _weights(result):
    return load_file(result["export"])


def test_loss_falls_and_logs_every_iteration(tmp_path):
    sgd = {"type": "SGD", "lr": 0.1, "momentum": 0.5}
    result = train(toy_config(tmp_path, optimizer=sgd, max_iters=30, ckpt_interval=10, keep_last=1))
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == list(range(1, 31))
    assert {"loss", "abs_err", "lr", "time", "data_time", "epoch", "it_s"} <= set(records[0])
    assert all(r["it_s"] > 0 for r in records)
    assert records[-1]["loss"] < 0.2 * records[0]["loss"]
    assert records[-1]["lr"] == pytest.approx(0.1 / 28)  # poly(1): last of 28 decay steps
    assert sorted(p.name for p in tmp_path.glob("iter_*.pth")) == ["iter_0000030.pth"]
    state = load_training_checkpoint(result["checkpoint"])
    assert state["iteration"] == 30 and state["epoch"] == 9 and state["epoch_step"] == 3


def test_grad_accum_matches_the_full_batch(tmp_path):
    # mean-of-means over equal micro-batches equals the full-batch mean: same updates
    sgd = {"type": "SGD", "lr": 0.05, "momentum": 0.9}
    one = train(toy_config(tmp_path / "a", optimizer=sgd))
    two = train(toy_config(tmp_path / "b", optimizer=sgd, grad_accum=2))
    for key, value in _weights(one).items():
        # only the summation order of the 8-sample mean differs: ~1 ulp per step, 9 steps with
        # momentum; weights are O(1), measured <= 1.2e-7 apart (any ISA, 1 or 2 threads)
        torch.testing.assert_close(_weights(two)[key], value, rtol=4e-6, atol=1e-7)


def test_adamw_dropout_resume_is_bitwise_exact(tmp_path):
    # dropout draws from the global RNG and AdamW has per-parameter state: both must come back
    want = _weights(train(toy_config(tmp_path / "ref", dropout=0.3, grad_accum=2)))
    cfg = toy_config(tmp_path / "run", dropout=0.3, grad_accum=2, ckpt_interval=4)
    with pytest.raises(_Killed):
        train(cfg, hooks=[_kill_after(6)])
    got = _weights(train(cfg, resume=True))
    assert all(torch.equal(got[k], want[k]) for k in want)  # same ops in the same order: exact
    # a different seed really changes the run (the comparison above is not vacuous)
    other = _weights(train(toy_config(tmp_path / "other", dropout=0.3, grad_accum=2, seed=4)))
    assert not torch.equal(other["linear.weight"], want["linear.weight"])


def test_data_loader_workers_do_not_change_the_run(tmp_path):
    # sample jitter is seeded per (seed, epoch, index), so worker processes see the same data
    want = _weights(train(toy_config(tmp_path / "w0", max_iters=4)))
    cfg = toy_config(tmp_path / "w2", max_iters=4)
    cfg["data"]["num_workers"] = 2
    got = _weights(train(cfg))
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_resume_from_an_explicit_path_and_an_empty_dir(tmp_path, caplog):
    cfg = toy_config(tmp_path / "a", max_iters=4, ckpt_interval=2, keep_last=0)
    train(cfg)
    explicit = tmp_path / "a" / "iter_0000002.pth"
    resumed = train(toy_config(tmp_path / "b", max_iters=4), resume=str(explicit))
    assert resumed["iteration"] == 4
    assert torch.equal(
        _weights(resumed)["linear.weight"],
        load_file(tmp_path / "a" / "model_final.safetensors")["linear.weight"],
    )
    fresh = train(toy_config(tmp_path / "c", max_iters=1, resume=True))  # nothing to resume
    assert fresh["iteration"] == 1 and "starting from scratch" in caplog.text


def test_config_errors_say_what_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="divisible"):
        train(toy_config(tmp_path, batch_size=6, grad_accum=4))
    with pytest.raises(DatasetError, match="fewer than one global batch"):
        train(toy_config(tmp_path, batch_size=32))
    with pytest.raises(ConfigError, match="max_iters"):
        train(toy_config(tmp_path, max_iters=0))
    with pytest.raises(ConfigError, match="amp"):
        train(toy_config(tmp_path, amp="fp8"))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_runs_and_fp16_keeps_its_grad_scaler(tmp_path, amp):
    sgd = {"type": "SGD", "lr": 0.05}
    result = train(toy_config(tmp_path, optimizer=sgd, max_iters=3, amp=amp, clip_grad=1.0))
    state = load_training_checkpoint(result["checkpoint"])
    assert ("scale" in state["scaler"]) == (amp == "fp16")
    assert torch.isfinite(_weights(result)["linear.weight"]).all()
    assert "grad_norm" in result["train"]


def test_resume_with_another_accumulation_keeps_the_data_order(tmp_path):
    # the checkpoint stores the position in global samples, not in micro-batches
    sgd = {"type": "SGD", "lr": 0.05, "momentum": 0.9}
    want = _weights(train(toy_config(tmp_path / "ref", optimizer=sgd)))
    with pytest.raises(_Killed):
        train(toy_config(tmp_path / "run", optimizer=sgd, ckpt_interval=4), hooks=[_kill_after(5)])
    got = _weights(train(toy_config(tmp_path / "run", optimizer=sgd, grad_accum=4), resume=True))
    for key, value in want.items():
        # as above: accumulation reorders the batch mean only (measured <= 1.2e-7 apart)
        torch.testing.assert_close(got[key], value, rtol=4e-6, atol=1e-7)
