"""Unit tests of the engine's pieces: schedules, samplers, seeded data, RNG state, checkpoints."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from ovseg.engine.checkpoint import (
    find_resume_checkpoint,
    list_checkpoints,
    read_pointer,
    write_checkpoint,
)
from ovseg.engine.data import ResumableDistributedSampler, SeededDataset, ShardedEvalSampler
from ovseg.engine.dist import all_gather_variable, reduce_mean
from ovseg.engine.launch import parse_train_args
from ovseg.engine.logger import TrainLogger
from ovseg.engine.rng import capture_rng_state, restore_rng_state
from ovseg.engine.schedule import IterLRScheduler, lr_factor
from ovseg.engine.trainer import resolve_amp
from ovseg.errors import ConfigError
from ovseg.weights import load_checkpoint, save_checkpoint


def test_lr_factor_warmup_then_decay():
    kw = {"warmup_iters": 4}
    assert [lr_factor(i, 14, type="cosine", **kw) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 14, type="cosine", **kw) == pytest.approx(1.0)
    assert lr_factor(9, 14, type="cosine", **kw) == pytest.approx(0.5)  # half-way: cos = 0
    assert lr_factor(9, 14, type="poly", power=2.0, **kw) == pytest.approx(0.25)
    assert lr_factor(13, 14, type="poly", min_lr_ratio=0.1, **kw) == pytest.approx(0.1 + 0.9 * 0.1)
    assert lr_factor(13, 14, type="constant", **kw) == 1.0
    assert lr_factor(0, 10, type="constant", warmup_iters=2, warmup_ratio=0.1) == pytest.approx(
        0.55
    )
    with pytest.raises(ConfigError, match="cosine"):
        lr_factor(5, 10, type="step")


def test_scheduler_sets_each_groups_lr_from_its_base():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD(
        [{"params": [p1], "base_lr": 0.1}, {"params": [p2], "base_lr": 0.01}], lr=1
    )
    sched = IterLRScheduler(opt, 10, type="poly", power=1.0)
    sched.step_to(5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.005])
    assert sched.state_dict()["last_iter"] == 5


def test_rank_batches_together_are_the_single_process_batch():
    data = list(range(37))
    world, per_rank = 2, 3
    for epoch in (0, 1):
        single = ResumableDistributedSampler(data, num_replicas=1, rank=0, seed=5)
        single.set_position(epoch, 0)
        full = list(single)
        shards = []
        for rank in range(world):
            s = ResumableDistributedSampler(data, num_replicas=world, rank=rank, seed=5)
            s.set_position(epoch, 0)
            shards.append(list(s))
        steps = len(shards[0]) // per_rank
        for step in range(steps):
            together = sorted(
                i for shard in shards for i in shard[step * per_rank : (step + 1) * per_rank]
            )
            b = world * per_rank
            assert together == sorted(full[step * b : (step + 1) * b])
    # skipping k batches resumes at the same place
    s = ResumableDistributedSampler(data, num_replicas=world, rank=1, seed=5)
    s.set_position(1, 2 * per_rank)
    assert list(s) == shards[1][2 * per_rank :] and len(s) == len(shards[1]) - 2 * per_rank


def test_eval_sampler_covers_every_sample_once():
    shards = [list(ShardedEvalSampler(11, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))


class _Noisy:
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return (torch.rand(1).item(), random.random(), float(np.random.rand()))


def test_seeded_dataset_depends_only_on_seed_epoch_index():
    ds = SeededDataset(_Noisy(), seed=7)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = ds[3]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    torch.manual_seed(123)
    random.seed(9)
    assert ds[3] == first  # whatever the global state
    assert ds[2] != first
    ds.set_epoch(1)
    assert ds[3] != first


def test_rng_state_survives_the_safe_checkpoint_format(tmp_path):
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    want = (torch.rand(3), random.random(), np.random.randn(2))
    save_checkpoint({"rng": [state]}, tmp_path / "rng.pth")
    restore_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng"][0])
    got = (torch.rand(3), random.random(), np.random.randn(2))
    assert torch.equal(got[0], want[0]) and got[1] == want[1] and np.array_equal(got[2], want[2])


def _state(iteration):
    return {
        "iteration": iteration,
        "epoch": 0,
        "epoch_step": iteration,
        "model": {"w": torch.full((2,), float(iteration))},
        "optimizer": {},
        "scheduler": {"last_iter": iteration - 1},
    }


def test_checkpoints_pointer_pruning_and_fallback(tmp_path, caplog):
    written = []  # the run's own checkpoints, kept by the trainer across saves
    for it in (2, 4, 6):
        write_checkpoint(_state(it), tmp_path, keep_last=2, written=written)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["iter_0000006.pth", "iter_0000004.pth"]
    assert written == ["iter_0000006.pth", "iter_0000004.pth"]
    assert read_pointer(tmp_path) == tmp_path / "iter_0000006.pth"
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind
    path, state = find_resume_checkpoint(tmp_path)
    assert path.name == "iter_0000006.pth" and state["iteration"] == 6

    (tmp_path / "iter_0000006.pth").write_bytes(b"PK\x03\x04 not a whole zip")
    path, state = find_resume_checkpoint(tmp_path)
    assert path.name == "iter_0000004.pth" and torch.equal(
        state["model"]["w"], torch.full((2,), 4.0)
    )
    assert "iter_0000006.pth" in caplog.text

    # a file that loads but is not a training state is skipped the same way
    save_checkpoint({"w": torch.zeros(1)}, tmp_path / "iter_0000004.pth")
    assert find_resume_checkpoint(tmp_path) is None
    assert find_resume_checkpoint(tmp_path / "missing") is None


def test_pruning_never_touches_another_runs_checkpoints(tmp_path):
    # an older run left higher iterations here; pruning must rank only this run's files
    for it in (50, 100):
        save_checkpoint(_state(it), tmp_path / f"iter_{it:07d}.pth")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    written = []
    for it in (2, 4, 6):
        path = write_checkpoint(_state(it), tmp_path, keep_last=2, written=written)
        assert path.is_file()  # the checkpoint just written survives its own pruning
    names = sorted(p.name for p in list_checkpoints(tmp_path))
    assert names == ["iter_0000004.pth", "iter_0000006.pth", "iter_0000050.pth", "iter_0000100.pth"]
    assert all((tmp_path / n).read_bytes() == data for n, data in before.items())
    assert load_checkpoint(tmp_path / "iter_0000006.pth")["checkpoints"] == written
    # a single write without the run's list removes nothing but what it replaces
    write_checkpoint(_state(8), tmp_path, keep_last=1)
    assert len(list_checkpoints(tmp_path)) == 5


def test_logger_drops_records_after_the_resumed_iteration(tmp_path):
    lines = [{"mode": "train", "iter": i, "loss": 1.0} for i in range(1, 6)]
    (tmp_path / "log.jsonl").write_text("\n".join(map(json.dumps, lines)) + '\n{"mode": "tr')
    logger = TrainLogger(tmp_path, enabled=True, max_iters=8, start_iter=3)
    logger.log("train", 4, {"loss": float("nan"), "lr": 0.1})
    logger.close()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3, 4]
    assert records[-1] == {"mode": "train", "iter": 4, "loss": "nan", "lr": 0.1}


def test_single_process_collectives_are_identities():
    x = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(all_gather_variable(x), x)
    assert reduce_mean({"a": 2.0}) == {"a": 2.0}


def test_amp_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None
    assert resolve_amp(False, cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    assert resolve_amp("fp16", cpu) is torch.float16


def test_cli_arguments():
    args = parse_train_args(["cfg.yaml", "--resume", "a.b=1", "--work-dir", "w", "c=2"])
    assert (args.config, args.resume, args.work_dir, args.overrides) == (
        "cfg.yaml",
        True,
        "w",
        ["a.b=1", "c=2"],
    )
    args = parse_train_args(["cfg.yaml", "x=1", "--resume", "run/iter_0000004.pth"])
    assert args.resume == "run/iter_0000004.pth" and args.overrides == ["x=1"]
    assert parse_train_args(["cfg.yaml"]).resume is False
