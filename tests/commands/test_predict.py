"""Pieces of ``ovseg predict`` (ovseg/commands/predict.py) below the command itself."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.commands.predict import Shard, _labelled_summary, output_stems
from ovseg.structures import Detections


def _detections(count: int) -> Detections:
    return Detections(
        boxes=np.tile([0.0, 0.0, 4.0, 4.0], (count, 1)),
        scores=np.linspace(0.9, 0.5, count),
        query_indices=np.arange(count) % 2,
        labels=np.arange(count) % 2,
        queries=["cat", "dog"],
        class_names=["cat", "dog"],
        image_size=(8, 8),
    )


def test_the_summary_names_the_first_ten_and_counts_the_rest():
    assert _labelled_summary(_detections(2), "no detection") == "cat 0.90, dog 0.50"
    line = _labelled_summary(_detections(13), "no detection")
    assert line.startswith("cat 0.90, dog ") and line.endswith(" (+3 more)")
    assert line.count(",") == 9  # ten entries
    assert _labelled_summary(_detections(0), "no instance") == "no instance"


def test_one_process_is_rank_0_of_1_and_keeps_the_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    shard = Shard.from_environment("cuda")
    assert (shard.rank, shard.world, shard.owns_group) == (0, 1, False)
    assert shard.device_for("cuda") == "cuda"


def test_under_torchrun_cuda_means_the_local_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    shard = Shard(rank=3, world=4)
    assert shard.device_for("cuda") == "cuda:3"
    assert shard.device_for("cuda:1") == "cuda:1"  # an explicit index is kept
    assert shard.device_for(None) is None


def test_output_stems_are_reexported_by_the_cli():
    from ovseg import cli

    assert cli.output_stems is output_stems


def test_a_job_ends_at_a_barrier_unless_it_failed(monkeypatch):
    import torch.distributed as dist

    calls = []
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    Shard(rank=1, world=2, owns_group=True).close()
    assert calls == ["barrier", "destroy"]
    calls.clear()
    Shard(rank=1, world=2, owns_group=True).close(wait_for_peers=False)
    assert calls == ["destroy"]
    calls.clear()
    Shard(rank=0, world=2, owns_group=False).close()  # a group made by someone else stays
    assert calls == []


def test_predict_waits_at_the_barrier_only_when_it_succeeds(monkeypatch, tmp_path):
    from PIL import Image

    from ovseg.cli import main
    from ovseg.commands import predict

    closed = []

    class RecordingShard(Shard):
        def close(self, *, wait_for_peers: bool = True) -> None:
            closed.append(wait_for_peers)

    def broken(*args, **kwargs):
        raise RuntimeError("model failed")

    monkeypatch.setattr(Shard, "from_environment", classmethod(lambda cls, d: RecordingShard()))
    monkeypatch.setattr(predict, "_predict_input", broken)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    command = ["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--quiet"]
    with pytest.raises(RuntimeError, match="model failed"):
        main(command)
    assert closed == [False]
    monkeypatch.setattr(predict, "_predict_input", lambda *args, **kwargs: 0)
    assert main(command) == 0
    assert closed == [False, True]
