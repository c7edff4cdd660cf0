"""The training loop: one function, ``train(cfg)``, shared by every trainable task.

Config sections (plain mapping or OmegaConf)::

    task:      {type: <TASKS name>, ...}                 # an nn.Module, see ovseg.engine.task
    data:      {train: {type: <DATASETS name>, ...}, val: {...} (optional),
                batch_size: GLOBAL batch, num_workers: 2, val_batch_size: per-rank (optional)}
    optimizer: {type: AdamW | Adam | SGD, lr, weight_decay, ...}
    schedule:  {type: cosine | poly | constant, warmup_iters, warmup_ratio, min_lr_ratio, power}
    train:     {max_iters, grad_accum: 1, amp: auto | bf16 | fp16 | off, log_interval: 10,
                eval_interval: 0 (0: only at the end), ckpt_interval: 0 (0: only at the end),
                seed: 0, keep_last: 2, clip_grad: null | max_norm | {max_norm, norm_type},
                resume: false | true | path, new_run: false, device: auto | cpu | cuda,
                find_unused_parameters: false}
    work_dir:  where config.yaml, log.jsonl, iter_*.pth, last_checkpoint, model_final.* go;
               a folder holding another run is refused (``new_run: true`` starts in a fresh
               sub-folder ``work_dir/run_<UTC time>``), see ``ovseg.engine.workdir``
    custom_imports: [module, ...]   # imported first, to register plugin components

Under ``torchrun`` each process trains on ``batch_size / (world_size * grad_accum)`` samples per
micro-step; DDP averages gradients. The samples of each step and their random augmentation
depend only on (seed, epoch, index), not on the number of processes or loader workers (see
``ovseg.engine.data``). Resuming restores model, optimiser, schedule, scaler, the position
inside the epoch (in global samples) and every rank's RNG streams, so a resumed run ends with
the same weights as an uninterrupted one; a checkpoint whose config differs (beyond
``workdir.RESUME_MAY_CHANGE``) is refused. Note: accumulation splits a *contrastive* batch into
smaller negative sets, so it changes that objective; keep ``grad_accum: 1`` there.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ovseg.config import save_resolved_config
from ovseg.engine import dist as edist
from ovseg.engine.checkpoint import (
    find_resume_checkpoint,
    load_training_checkpoint,
    write_checkpoint,
)
from ovseg.engine.data import build_eval_loader, build_train_loader, move_to_device
from ovseg.engine.logger import TrainLogger
from ovseg.engine.optim import build_optimizer
from ovseg.engine.rng import capture_rng_state, restore_rng_state, seed_everything
from ovseg.engine.schedule import IterLRScheduler
from ovseg.engine.task import data_transform, has_method
from ovseg.engine.workdir import (
    CONFIG_NAME,
    check_resume_config,
    config_differences,
    new_run_dir,
    refuse_other_run,
    run_files,
)
from ovseg.errors import CheckpointError, ConfigError, DatasetError, OVSegError
from ovseg.registry import DATASETS, TASKS

LOGGER = logging.getLogger("ovseg.engine")

TRAIN_DEFAULTS: dict[str, Any] = {
    "grad_accum": 1,
    "amp": "auto",
    "log_interval": 10,
    "eval_interval": 0,
    "ckpt_interval": 0,
    "seed": 0,
    "keep_last": 2,
    "clip_grad": None,
    "resume": False,
    "new_run": False,
    "device": "auto",
    "find_unused_parameters": False,
}
EXPORT_NAME = "model_final.safetensors"

IterHook = Callable[[int], None]


def resolve_amp(amp: Any, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device`` (None: full precision).

    ``auto`` is bf16 on CUDA devices that support it and off elsewhere; ``fp16`` also turns on
    the GradScaler.
    """
    if amp in (None, False, "off", "none", "no", "fp32", "false"):
        return None
    if amp in (True, "auto", "true"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in ("fp16", "float16", "half"):
        return torch.float16
    raise ConfigError(f"train.amp={amp!r} is not one of auto, bf16, fp16, off.")


def _clip_cfg(clip: Any) -> tuple[float, float] | None:
    if clip is None or clip is False:
        return None
    if isinstance(clip, (int, float)):
        return float(clip), 2.0
    if isinstance(clip, Mapping) and "max_norm" in clip:
        return float(clip["max_norm"]), float(clip.get("norm_type", 2.0))
    raise ConfigError(
        f"train.clip_grad={clip!r}: use null, a max norm, or {{max_norm, norm_type}}."
    )


def _plain_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    plain = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    assert isinstance(plain, dict)
    plain.pop("_source_", None)
    for key in ("task", "data", "optimizer"):
        if not isinstance(plain.get(key), Mapping):
            raise ConfigError(f"The training config needs a '{key}:' mapping.")
    if not isinstance(plain["data"].get("train"), Mapping):
        raise ConfigError("The training config needs data.train: {type: <dataset>, ...}.")
    if "batch_size" not in plain["data"]:
        raise ConfigError("The training config needs data.batch_size (the global batch size).")
    if not plain.get("work_dir"):
        raise ConfigError("The training config needs work_dir (or pass --work-dir DIR).")
    train_cfg = {**TRAIN_DEFAULTS, **(plain.get("train") or {})}
    unknown = sorted(set(train_cfg) - set(TRAIN_DEFAULTS) - {"max_iters"})
    if unknown:
        LOGGER.warning("Unknown train.* keys %s are ignored (typo?).", ", ".join(unknown))
    if "max_iters" not in train_cfg or int(train_cfg["max_iters"]) <= 0:
        raise ConfigError("train.max_iters must be set to a positive number of iterations.")
    plain["train"] = train_cfg
    plain.setdefault("schedule", {"type": "constant"})
    return plain


def _build_dataset(data_cfg: Mapping[str, Any], task: nn.Module, split: str) -> Any:
    defaults = {}
    transform = data_transform(task, split)
    if transform is not None and "transform" not in data_cfg:
        defaults["transform"] = transform
    return DATASETS.build(dict(data_cfg), **defaults)


class _BatchStream:
    """Endless micro-batches over epochs; (epoch, epoch_step) is the resumable position."""

    def __init__(self, loader: Any, sampler: Any, seeded: Any, per_rank: int, seed: int) -> None:
        self.loader, self.sampler, self.seeded = loader, sampler, seeded
        self.per_rank = per_rank
        self.seed = seed
        self.steps_per_epoch = sampler.num_samples // per_rank
        self.epoch = 0
        self.epoch_step = 0
        self._iter: Any = None

    def seek(self, epoch: int, epoch_step: int) -> None:
        self.epoch, self.epoch_step, self._iter = int(epoch), int(epoch_step), None

    def next(self) -> Any:
        if self.epoch_step >= self.steps_per_epoch:
            self.epoch, self.epoch_step, self._iter = self.epoch + 1, 0, None
        if self._iter is None:
            self.sampler.set_position(self.epoch, self.epoch_step * self.per_rank)
            self.seeded.set_epoch(self.epoch)
            self.loader.generator.manual_seed(self.seed * 7919 + self.epoch)
            self._iter = iter(self.loader)
        batch = next(self._iter)
        self.epoch_step += 1
        return batch


def _select_checkpoint(resume: bool | str, work_dir: Path) -> tuple[str | None, dict | None]:
    """The checkpoint ``resume`` names (a file, a folder, or True: ``work_dir``) and its state."""
    if not resume:
        return None, None
    if isinstance(resume, str) and not Path(resume).is_dir():
        if not Path(resume).is_file():
            raise CheckpointError(f"--resume {resume}: no such file. Pass an iter_*.pth file.")
        return resume, load_training_checkpoint(resume)
    folder = work_dir if resume is True else Path(resume)
    found = find_resume_checkpoint(folder)
    if found is None:
        LOGGER.warning("No usable checkpoint in %s; starting from scratch.", folder)
        return None, None
    return str(found[0]), found[1]


def _same_run_restarted(work_dir: Path, found: list[str], plain: Mapping[str, Any]) -> bool:
    """True if ``work_dir`` holds only a run of this config killed before its first checkpoint."""
    if any(n.startswith(("iter_", "model_final.")) for n in found) or CONFIG_NAME not in found:
        return False
    text = (work_dir / CONFIG_NAME).read_text(encoding="utf-8")
    return not config_differences(text, plain)


def _claim_work_dir(
    plain: dict[str, Any], resume: bool | str
) -> tuple[str | None, dict[str, Any] | None]:
    """Rank 0: pick the checkpoint to resume from and make sure the work dir is this run's.

    Raises ``ConfigError`` if the work dir holds another run (without ``train.new_run``) or the
    checkpoint was trained with another config; may move ``plain['work_dir']`` to a new
    sub-folder (``train.new_run``). Nothing is written here.
    """
    work_dir = Path(plain["work_dir"])
    new_run = bool(plain["train"]["new_run"])
    if new_run and resume is True:
        raise ConfigError(
            "--resume continues the run in the work dir and --new-run starts another one; "
            "pass only one of them."
        )
    path, state = _select_checkpoint(resume, work_dir)
    if state is not None:
        check_resume_config(state.get("config"), plain, str(path))
    if new_run:
        plain["work_dir"] = str(new_run_dir(work_dir))
        LOGGER.info("New run in %s.", plain["work_dir"])
        return path, state
    found = run_files(work_dir)
    own = path is not None and Path(path).resolve().parent == work_dir.resolve()
    if not found or own:
        return path, state
    if path is None and resume is True and _same_run_restarted(work_dir, found, plain):
        LOGGER.warning("%s holds this run without a checkpoint yet; restarting it.", work_dir)
        return path, state
    why = " and no usable checkpoint to resume from" if resume is True else ""
    raise refuse_other_run(work_dir, found, why)


def _prepare(
    plain: dict[str, Any], resume: bool | str, rank: int
) -> tuple[str | None, dict[str, Any] | None]:
    """``_claim_work_dir`` on rank 0; every rank learns the outcome and loads the checkpoint."""
    decision: tuple[str | None, str | None, OVSegError | None] = (None, None, None)
    state = None
    if rank == 0:
        try:
            path, state = _claim_work_dir(plain, resume)
            decision = (plain["work_dir"], path, None)
        except OVSegError as exc:
            decision = (None, None, exc)
    work_dir, path, error = edist.broadcast_object(decision)
    if error is not None:
        raise error
    plain["work_dir"] = work_dir
    if path is not None and state is None:
        state = load_training_checkpoint(path)
    return path, state


class _Run:
    """The objects of one training run (built once, in a fixed order) and its loop."""

    def __init__(self, plain: dict[str, Any], info: edist.DistInfo) -> None:
        self.plain = plain
        tcfg = self.tcfg = plain["train"]
        self.rank, self.world, self.device = info.rank, info.world_size, info.device
        if self.device.type == "cpu":
            # Subnormal floats (tiny gradients, Adam moments, saturated sigmoids) run at a small
            # fraction of normal speed on x86 CPUs and can slow a CPU run down many times over.
            torch.set_flush_denormal(True)
        self.work_dir = Path(plain["work_dir"])
        self.run_id = uuid.uuid4().hex
        self.written: list[str] = []  # names of the checkpoints this run wrote in work_dir
        self.seed = int(tcfg["seed"])
        self.max_iters = int(tcfg["max_iters"])
        self.accum = int(tcfg["grad_accum"])
        global_batch = int(plain["data"]["batch_size"])
        if self.accum < 1 or global_batch % (self.world * self.accum):
            raise ConfigError(
                f"data.batch_size={global_batch} must be divisible by world size ({self.world}) x "
                f"train.grad_accum ({self.accum})."
            )
        self.per_rank = global_batch // (self.world * self.accum)

        seed_everything(self.seed)  # identical initial weights on every rank
        task = self.task = TASKS.build(plain["task"])
        if not (isinstance(task, nn.Module) and has_method(task, "collate")):
            raise ConfigError(
                f"task {plain['task']['type']!r} must be an nn.Module with collate()."
            )
        self._build_data(global_batch)
        task.to(self.device)
        self.optimizer = build_optimizer(task, plain["optimizer"])
        self.scheduler = IterLRScheduler(self.optimizer, self.max_iters, **plain["schedule"])
        self.amp_dtype = resolve_amp(tcfg["amp"], self.device)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.clip = _clip_cfg(tcfg["clip_grad"])
        self.iteration = 0
        self.checkpoint: Path | None = None
        self.model: nn.Module = task  # DDP-wrapped by start()
        self.logger: TrainLogger | None = None

    def _build_data(self, global_batch: int) -> None:
        data = self.plain["data"]
        num_workers = int(data.get("num_workers", 2))
        train_set = _build_dataset(data["train"], self.task, "train")
        loader, sampler, seeded = build_train_loader(
            train_set,
            batch_size=self.per_rank,
            num_workers=num_workers,
            collate_fn=self.task.collate,
            rank=self.rank,
            world_size=self.world,
            seed=self.seed,
            pin_memory=self.device.type == "cuda",
        )
        self.stream = _BatchStream(loader, sampler, seeded, self.per_rank, self.seed)
        if self.stream.steps_per_epoch == 0:
            raise DatasetError(
                f"The training set has {len(train_set)} samples, fewer than one global batch "
                f"({global_batch}); lower data.batch_size or add data."
            )
        self.val_loader = None
        if data.get("val"):
            if not has_method(self.task, "evaluate"):
                LOGGER.warning("data.val is set but the task has no evaluate(); skipping it.")
                return
            self.val_loader = build_eval_loader(
                _build_dataset(data["val"], self.task, "val"),
                batch_size=int(data.get("val_batch_size", self.per_rank)),
                num_workers=num_workers,
                collate_fn=self.task.collate,
                rank=self.rank,
                world_size=self.world,
            )

    def restore(self, path: str | None, state: dict[str, Any] | None) -> None:
        """Load the checkpoint state (if any); otherwise seed per-rank streams."""
        if path is None or state is None:
            seed_everything(self.seed + self.rank)  # per-rank streams for dropout and the like
            return
        self.task.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        # position in global samples, so a run may resume with another world size / accumulation
        samples = state.get("epoch_samples")
        step = int(state["epoch_step"]) if samples is None else int(samples) // self._step_samples
        self.stream.seek(int(state["epoch"]), step)
        rngs = state.get("rng") or []
        if len(rngs) == self.world:
            restore_rng_state(rngs[self.rank])
        else:
            LOGGER.warning(
                "Checkpoint was written by %d processes, this run has %d; RNG streams are "
                "reseeded, so dropout-like randomness will differ from the original run.",
                len(rngs),
                self.world,
            )
            seed_everything(self.seed + self.rank + 1000 * self.iteration)
        self.checkpoint = Path(path)
        self.run_id = str(state.get("run_id") or self.run_id)
        if self.checkpoint.resolve().parent == self.work_dir.resolve():
            # the same run continues here: its earlier checkpoints may be pruned
            names = state.get("checkpoints") or [self.checkpoint.name]
            self.written = [n for n in names if (self.work_dir / n).is_file()]
        if self.rank == 0:
            LOGGER.info("Resumed from %s at iteration %d.", path, self.iteration)

    @property
    def _step_samples(self) -> int:
        """Global samples per micro-step (all ranks together)."""
        return self.per_rank * self.world

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def step(self) -> tuple[dict[str, torch.Tensor], float, float | None]:
        """One iteration: ``accum`` micro-batches, one optimiser step.

        Returns (0-dim outputs averaged over micro-batches, data loading seconds, grad norm).
        """
        self.scheduler.step_to(self.iteration)
        sums: dict[str, torch.Tensor] = {}
        data_time = 0.0
        for micro in range(self.accum):
            t_data = time.perf_counter()
            batch = move_to_device(self.stream.next(), self.device)
            data_time += time.perf_counter() - t_data
            sync = micro == self.accum - 1 or self.world == 1
            with contextlib.nullcontext() if sync else self.model.no_sync():
                with self.autocast():
                    out = self.model(batch)
                if "loss" not in out:
                    raise ConfigError("The task's forward() must return a dict with 'loss'.")
                self.scaler.scale(out["loss"] / self.accum).backward()
            for key, value in out.items():
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    sums[key] = sums.get(key, 0.0) + value.detach().float() / self.accum
        grad_norm = None
        if self.clip is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(
                    self.task.parameters(), max_norm=self.clip[0], norm_type=self.clip[1]
                )
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if has_method(self.task, "after_train_step"):
            self.task.after_train_step()
        self.iteration += 1
        return sums, data_time, grad_norm

    def evaluate(self) -> dict[str, float]:
        self.task.eval()
        with torch.no_grad(), self.autocast():
            metrics = self.task.evaluate(self.val_loader, distributed=self.world > 1)
        self.task.train()
        metrics = {k: float(v) for k, v in metrics.items()}
        self.logger.log("val", self.iteration, metrics)
        return metrics

    def save(self) -> None:
        """Write a checkpoint of the current state (collective: every rank must call it)."""
        rng = edist.all_gather_object(capture_rng_state())
        if self.rank == 0:
            state = {
                "iteration": self.iteration,
                "epoch": self.stream.epoch,
                "epoch_step": self.stream.epoch_step,
                "epoch_samples": self.stream.epoch_step * self._step_samples,
                "world_size": self.world,
                "model": self.task.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "config": OmegaConf.to_yaml(OmegaConf.create(self.plain)),
                "run_id": self.run_id,
            }
            keep = int(self.tcfg["keep_last"] or 0)
            self.checkpoint = write_checkpoint(
                state, self.work_dir, keep_last=keep, written=self.written
            )
        self.checkpoint = Path(edist.broadcast_object(str(self.checkpoint)))

    def fit(self, hooks: Sequence[IterHook]) -> dict[str, Any]:
        """Run from the current iteration to ``max_iters``; see ``train`` for the result."""
        tcfg = self.tcfg
        if self.world > 1:
            self.model = DistributedDataParallel(
                self.task,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(tcfg["find_unused_parameters"]),
            )
        self.logger = TrainLogger(
            self.work_dir,
            enabled=self.rank == 0,
            max_iters=self.max_iters,
            start_iter=self.iteration,
        )
        log_interval = max(1, int(tcfg["log_interval"]))
        eval_interval = int(tcfg["eval_interval"] or 0)
        ckpt_interval = int(tcfg["ckpt_interval"] or 0)
        last_values: dict[str, float] = {}
        metrics: dict[str, float] = {}

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        window_start, window_iter = time.perf_counter(), self.iteration
        while self.iteration < self.max_iters:
            start = time.perf_counter()
            sums, data_time, grad_norm = self.step()
            it, last = self.iteration, self.iteration == self.max_iters
            if it % log_interval == 0 or last:
                values = {k: float(v) for k, v in sums.items()}
                if grad_norm is not None:
                    values["grad_norm"] = grad_norm
                values = edist.reduce_mean(values)
                values.update(
                    lr=self.optimizer.param_groups[0]["lr"],
                    epoch=self.stream.epoch,
                    time=time.perf_counter() - start,
                    data_time=data_time,
                )
                now = time.perf_counter()
                values["iters_per_s"] = (it - window_iter) / max(now - window_start, 1e-9)
                window_start, window_iter = now, it
                self.logger.log("train", it, values)
                last_values = values
            self.logger.advance()
            if self.val_loader is not None and (
                (eval_interval and it % eval_interval == 0) or last
            ):
                metrics = self.evaluate()
            if (ckpt_interval and it % ckpt_interval == 0) or last:
                self.save()
            for hook in hooks:
                hook(it)

        export_path = None
        if has_method(self.task, "export"):
            if self.rank == 0:
                export_path = str(self.work_dir / EXPORT_NAME)
                self.task.export(export_path)
            export_path = edist.broadcast_object(export_path)
        edist.barrier()
        return {
            "iteration": self.iteration,
            "work_dir": str(self.work_dir),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "export": export_path,
            "train": last_values,
            "metrics": metrics,
        }

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()


def train(
    cfg: Mapping[str, Any], *, resume: bool | str = False, hooks: Sequence[IterHook] = ()
) -> dict[str, Any]:
    """Train ``cfg['task']`` on ``cfg['data']`` (see the module docstring for the config).

    ``resume``: False (unless ``train.resume`` says otherwise), True (newest usable checkpoint
    in work_dir; a damaged newest one falls back to the previous) or a checkpoint path. A work
    dir holding another run, or a checkpoint trained with another config, is a ``ConfigError``
    raised before anything is written.
    ``hooks`` are called with the iteration count after every iteration (after logging,
    evaluation and checkpointing); an exception from a hook stops training.

    Returns ``{"iteration", "work_dir", "checkpoint" (last written or resumed from), "export"
    (path of the exported weights or None), "train": last logged values, "metrics": last
    evaluation metrics}``.
    """
    plain = _plain_config(cfg)
    resume = resume or plain["train"]["resume"]
    info = edist.init_distributed(str(plain["train"]["device"]))
    run: _Run | None = None
    try:
        for module in plain.get("custom_imports") or []:
            importlib.import_module(module)
        path, state = _prepare(plain, resume, info.rank)
        run = _Run(plain, info)
        run.restore(path, state)
        del state
        if info.rank == 0:
            save_resolved_config(plain, run.work_dir / "config.yaml")
        return run.fit(hooks)
    finally:
        if run is not None:
            run.close()
        if info.initialized_here:
            torch.distributed.destroy_process_group()
