"""A work dir holds one run: a new run over it is refused, --resume checks the config."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ovseg.cli import main as cli_main
from ovseg.engine import train
from ovseg.engine.checkpoint import load_training_checkpoint
from ovseg.engine.workdir import RESUME_MAY_CHANGE, config_differences
from ovseg.errors import ConfigError
from tests.engine.test_trainer_toy import _kill_after, _Killed, _weights, toy_config


def _snapshot(folder):
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def finished(tmp_path):
    """A finished run (checkpoints at 2 and 4, keep_last=0) and a copy of its files."""
    work = tmp_path / "run"
    train(toy_config(work, max_iters=4, ckpt_interval=2, keep_last=0))
    files = _snapshot(work)
    assert {"config.yaml", "log.jsonl", "iter_0000004.pth", "model_final.safetensors"} <= set(files)
    return work, files


def test_a_new_run_into_a_finished_runs_dir_is_refused(finished, tmp_path, capsys):
    work, files = finished
    # same config, another config, keep_last=1 (used to delete every new checkpoint): refused
    for cfg in (
        toy_config(work, max_iters=4, ckpt_interval=2, keep_last=0),
        toy_config(work, max_iters=3, seed=7, keep_last=1, ckpt_interval=1),
    ):
        with pytest.raises(ConfigError, match="holds another training run") as err:
            train(cfg)
        assert "--resume" in str(err.value) and "--new-run" in str(err.value)
        assert "iter_0000004.pth" in str(err.value) and "model_final.safetensors" in str(err.value)
        assert _snapshot(work) == files

    # the command line says so with exit code 2, not a traceback
    config = tmp_path / "toy.yaml"
    OmegaConf.save(OmegaConf.create(toy_config(tmp_path / "elsewhere", max_iters=3)), config)
    assert cli_main(["train", str(config), "--work-dir", str(work)]) == 2
    assert "holds another training run" in capsys.readouterr().err
    assert _snapshot(work) == files

    # a folder with only the log of a run is another run too
    log_only = tmp_path / "log_only"
    log_only.mkdir()
    (log_only / "log.jsonl").write_text('{"mode": "train", "iter": 1, "loss": 1.0}\n')
    with pytest.raises(ConfigError, match="log.jsonl"):
        train(toy_config(log_only, max_iters=2))
    assert (log_only / "log.jsonl").read_text() == '{"mode": "train", "iter": 1, "loss": 1.0}\n'


def test_new_run_goes_to_a_fresh_sub_folder(finished, tmp_path):
    work, files = finished
    config = tmp_path / "toy.yaml"
    OmegaConf.save(OmegaConf.create(toy_config(work, max_iters=3, seed=7, keep_last=1)), config)
    assert cli_main(["train", str(config), "--new-run"]) == 0
    (sub,) = work.glob("run_*")
    assert (sub / "model_final.safetensors").is_file()
    assert [p.name for p in sub.glob("iter_*.pth")] == ["iter_0000003.pth"]
    assert OmegaConf.load(sub / "config.yaml").work_dir == str(sub)
    assert {k: v for k, v in _snapshot(work).items() if not k.startswith(sub.name)} == files
    # a second new run gets its own folder
    second = train(toy_config(work, max_iters=1, new_run=True))
    assert second["work_dir"] != str(sub) and second["iteration"] == 1
    with pytest.raises(ConfigError, match="only one of them"):
        train(toy_config(work, max_iters=1, new_run=True), resume=True)


def test_resume_with_another_config_names_the_keys(finished):
    work, files = finished
    changed = toy_config(work, max_iters=4, ckpt_interval=2, keep_last=0, seed=5)
    changed["optimizer"]["lr"] = 0.1
    with pytest.raises(ConfigError) as err:
        train(changed, resume=True)
    message = str(err.value)
    assert "optimizer.lr: 0.05 in the checkpoint, 0.1 now" in message
    assert "train.seed: 3 in the checkpoint, 5 now" in message
    assert "iter_0000004.pth" in message
    assert _snapshot(work) == files
    # an explicit checkpoint path is checked the same way, whatever the work dir
    with pytest.raises(ConfigError, match="optimizer.lr"):
        train(
            dict(changed, work_dir=str(work.parent / "other")),
            resume=str(work / "iter_0000002.pth"),
        )
    assert not (work.parent / "other").exists()


def test_resume_may_change_where_and_how_long_but_continues_the_same_run(finished):
    work, _ = finished
    # more iterations, another logging cadence and accumulation: allowed, same run continues
    cfg = toy_config(work, max_iters=6, ckpt_interval=1, keep_last=2, log_interval=3, grad_accum=2)
    result = train(cfg, resume=True)
    assert result["iteration"] == 6
    # this run's pruning keeps its two newest; the earlier run's 2 and 4 are the same run's
    # (the resumed checkpoint lists them), so they are pruned too
    assert sorted(p.name for p in work.glob("iter_*.pth")) == [
        "iter_0000005.pth",
        "iter_0000006.pth",
    ]
    state = load_training_checkpoint(work / "iter_0000006.pth")
    assert state["run_id"] == load_training_checkpoint(work / "iter_0000005.pth")["run_id"]


def test_config_differences_ignore_only_the_listed_keys():
    base = toy_config("a", max_iters=4)
    moved = toy_config("b", max_iters=8, log_interval=5, device="cpu", resume=True)
    assert config_differences(OmegaConf.to_yaml(OmegaConf.create(base)), moved) == []
    other = toy_config("a", max_iters=4, amp="bf16", dropout=0.1)
    assert config_differences(base, other) == [
        ("task.dropout", 0.0, 0.1),
        ("train.amp", "<unset>", "bf16"),
    ]
    assert "train.amp" not in RESUME_MAY_CHANGE and "train.seed" not in RESUME_MAY_CHANGE


def test_resume_restarts_a_run_killed_before_its_first_checkpoint(tmp_path):
    work = tmp_path / "run"
    cfg = toy_config(work, max_iters=4)
    with pytest.raises(_Killed):
        train(cfg, hooks=[_kill_after(2)])  # config.yaml and log.jsonl, no checkpoint
    assert not list(work.glob("iter_*.pth"))
    with pytest.raises(ConfigError, match="no usable checkpoint"):
        train(toy_config(work, max_iters=4, seed=9), resume=True)  # another run's leftovers
    want = _weights(train(toy_config(tmp_path / "ref", max_iters=4)))
    got = _weights(train(cfg, resume=True))
    assert all(torch.equal(got[k], want[k]) for k in want)
