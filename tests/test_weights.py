"""Tests for ovseg.weights: safe loading, malicious pickles, corrupt files, atomic saving."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import ovseg.weights as weights
from ovseg.errors import CheckpointError, UnsafeCheckpointError, WeightsNotFoundError
from ovseg.weights import (
    ALLOWED_GLOBALS,
    atomic_path,
    find_pickle_globals,
    load_checkpoint,
    load_safetensors_metadata,
    load_state_dict,
    save_checkpoint,
    save_state_dict,
    sha256_file,
    verify_sha256,
)


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(2, 3, generator=g),
        "conv.bias": torch.arange(2, dtype=torch.float16),
        "bn.num_batches_tracked": torch.tensor(7),
        "mask": torch.tensor([True, False]),
    }


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


def test_safetensors_round_trip_with_metadata(tmp_path):
    path = save_state_dict(_state(), tmp_path / "m.safetensors", metadata={"arch": "ViT-B-16"})
    _assert_same(load_state_dict(path), _state())
    assert load_safetensors_metadata(path) == {"arch": "ViT-B-16"}
    assert _leftovers(tmp_path) == []


def test_safetensors_detected_by_header_without_suffix(tmp_path):
    path = save_state_dict(_state(), tmp_path / "weights.bin")
    _assert_same(load_state_dict(path), _state())


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_round_trip_zip_and_legacy(tmp_path, zip_format):
    path = tmp_path / "m.pt"
    torch.save(_state(), path, _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(path) is zip_format
    _assert_same(load_state_dict(path), _state())
    assert list(load_state_dict(path)) == list(_state())  # pickle keeps the saved order
    _assert_same(load_checkpoint(path), _state())


@pytest.mark.parametrize(
    "env", ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
)
def test_benign_files_load_under_torch_env_overrides(tmp_path, monkeypatch, env):
    monkeypatch.setenv(env, "1")
    torch.save({"state_dict": _state()}, tmp_path / "ok.pt")
    _assert_same(load_state_dict(tmp_path / "ok.pt"), _state())


def test_map_location(tmp_path):
    torch.save(_state(), tmp_path / "m.pt")
    save_state_dict(_state(), tmp_path / "m.safetensors")
    for name in ("m.pt", "m.safetensors"):
        for loc in ("cpu", torch.device("cpu"), {"cuda:0": "cpu"}, None):
            loaded = load_state_dict(tmp_path / name, map_location=loc)
            assert all(t.device.type == "cpu" for t in loaded.values())
    meta = load_state_dict(tmp_path / "m.pt", map_location="meta")
    assert meta["conv.weight"].is_meta and meta["conv.weight"].shape == (2, 3)


def test_newer_dtypes_and_views_round_trip(tmp_path):
    state = {
        "u16": torch.tensor([0, 1, 65535], dtype=torch.uint16),
        "f8": torch.zeros(2, dtype=torch.float8_e4m3fn),
        "bf16": torch.ones(2, dtype=torch.bfloat16),
        "view": torch.arange(10.0)[2:5],
        "t": torch.arange(6.0).reshape(2, 3).t(),
    }
    torch.save(state, tmp_path / "a.pt")
    loaded = load_state_dict(tmp_path / "a.pt")
    for k in state:
        assert loaded[k].dtype == state[k].dtype
        assert torch.equal(loaded[k].float(), state[k].float())
    save_state_dict(state, tmp_path / "a.safetensors")  # views/transposes made contiguous
    assert torch.equal(load_state_dict(tmp_path / "a.safetensors")["t"], state["t"])


def test_shared_storage_is_cloned_for_safetensors(tmp_path):
    w = torch.randn(4, 3)
    state = {"embed.weight": w, "head.weight": w, "half": w[:2]}
    path = save_state_dict(state, tmp_path / "tied.safetensors")
    loaded = load_state_dict(path)
    assert torch.equal(loaded["embed.weight"], w) and torch.equal(loaded["head.weight"], w)
    assert torch.equal(loaded["half"], w[:2])


@pytest.mark.parametrize("key", ["state_dict", "model", "module"])
def test_unwraps_training_checkpoints(tmp_path, key):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, key: _state(), "meta": {"lr": 0.1}}, path)
    _assert_same(load_state_dict(path), _state())


def test_unwraps_nested_and_strips_module_prefix(tmp_path):
    ddp = OrderedDict((f"module.{k}", v) for k, v in _state().items())
    path = tmp_path / "ddp.pt"
    torch.save({"model": {"state_dict": ddp}, "step": 10}, path)
    _assert_same(load_state_dict(path), _state())


def test_partial_module_prefix_is_kept(tmp_path):
    state = {"module.weight": torch.ones(1), "other": torch.zeros(1)}
    torch.save(state, tmp_path / "p.pt")
    assert list(load_state_dict(tmp_path / "p.pt")) == ["module.weight", "other"]


def test_non_state_dict_content_is_refused(tmp_path):
    torch.save({"epoch": 3, "best": 0.5}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match=r"'epoch'.*int") as info:
        load_state_dict(tmp_path / "meta.pt")
    assert "meta.pt" in str(info.value) and "load_checkpoint" in str(info.value)
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="found a list"):
        load_state_dict(tmp_path / "list.pt")
    torch.save(torch.ones(2), tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match="single tensor"):
        load_state_dict(tmp_path / "t.pt")


def test_nested_training_checkpoint_round_trip(tmp_path):
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([param], lr=1e-3)
    param.grad = torch.full((3,), 0.5)
    opt.step()
    gen = torch.Generator().manual_seed(1234)
    torch.rand(5, generator=gen)
    ckpt = {
        "model": {"w": param.detach().clone()},
        "optimizer": opt.state_dict(),
        "scheduler": {"last_epoch": 4, "base_lrs": [1e-3], "_last_lr": [1e-3]},
        "rng": {
            "torch": gen.get_state(),
            "cpu": torch.get_rng_state(),
            "python": (3, (1, 2), None),
        },
        "step": 17,
        "name": "run-a",
        "tags": {"x", "y"},
        "blob": b"\x00\xffbytes",
        "shape": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "dtype": torch.bfloat16,
    }
    path = save_checkpoint(ckpt, tmp_path / "ckpt" / "last.pt")
    assert _leftovers(path.parent) == []
    back = load_checkpoint(path)
    assert back["step"] == 17 and back["name"] == "run-a" and back["tags"] == {"x", "y"}
    assert back["blob"] == b"\x00\xffbytes" and back["shape"] == torch.Size([2, 3])
    assert back["device"] == torch.device("cpu") and back["dtype"] is torch.bfloat16
    assert back["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    exp_avg = opt.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], exp_avg)
    assert back["rng"]["torch"].dtype == torch.uint8
    restored = torch.Generator()
    restored.set_state(back["rng"]["torch"])
    assert torch.equal(torch.rand(4, generator=restored), torch.rand(4, generator=gen))
    # the model weights inside are reachable through the state-dict loader as well
    assert torch.equal(load_state_dict(path)["w"], param.detach())


def test_save_checkpoint_refuses_objects_that_cannot_be_loaded(tmp_path):
    import numpy as np

    target = tmp_path / "bad.pt"
    target.write_bytes(b"old")
    with pytest.raises(CheckpointError, match="numpy") as info:
        save_checkpoint({"arr": np.zeros(2)}, target)
    assert "nothing was written" in str(info.value)
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Malicious pickles
# ---------------------------------------------------------------------------------------------


class _OpenFile:
    """Unpickling this creates (truncates) a file: the classic malicious checkpoint."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _forbid_torch_load(monkeypatch) -> list[object]:
    calls: list[object] = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("torch.load reached for a malicious file")

    monkeypatch.setattr(torch, "load", spy)
    return calls


@pytest.mark.parametrize("force_unsafe_env", [False, True])
@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_open_is_refused(tmp_path, monkeypatch, force_unsafe_env, zip_format):
    if force_unsafe_env:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    pwned = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {"weight": torch.ones(2), "x": _OpenFile(pwned)},
        path,
        _use_new_zipfile_serialization=zip_format,
    )
    calls = _forbid_torch_load(monkeypatch)
    for loader in (load_state_dict, load_checkpoint):
        with pytest.raises(UnsafeCheckpointError) as info:
            loader(path)
        msg = str(info.value)
        # builtins.open is io.open on Python 3; the message names the global as pickled
        assert f"'{open.__module__}.open'" in msg
        assert "malicious" in msg and "safetensors" in msg
        assert str(path) in msg
    assert not pwned.exists()
    assert calls == []


@pytest.mark.parametrize("force_unsafe_env", [False, True])
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_system_is_refused(tmp_path, monkeypatch, force_unsafe_env, protocol):
    if force_unsafe_env:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    pwned = tmp_path / "pwned_sys"
    path = tmp_path / "evil_sys.pt"
    torch.save({"x": _System(f"touch {pwned}")}, path, pickle_protocol=protocol)
    calls = _forbid_torch_load(monkeypatch)
    with pytest.raises(UnsafeCheckpointError, match=rf"'{os.system.__module__}\.system'"):
        load_checkpoint(path)
    assert not pwned.exists()
    assert calls == []


def test_torch_load_itself_would_run_the_payload(tmp_path, monkeypatch):
    """Guards the test above: the payload is live, so only our scan stops it."""
    pwned = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"x": _OpenFile(pwned)}, path)
    obj = torch.load(path, weights_only=False)  # the unsafe call, on purpose, in a test only
    obj["x"].close()  # the payload's open() handle
    assert pwned.exists()


def test_pickled_module_and_custom_class_are_refused(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
        load_state_dict(tmp_path / "module.pt")


def _zip_with_data_pkl(base: Path, payload: bytes) -> Path:
    """A real torch zip whose data.pkl is replaced by ``payload``."""
    torch.save({"w": torch.ones(1)}, base)
    out = base.with_name("crafted.pt")
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = payload if info.filename.endswith("data.pkl") else src.read(info)
            dst.writestr(info, data)
    return out


def test_stack_global_decoy_strings_are_not_trusted(tmp_path):
    # Pushes "posix", "system", then the allowed names "collections", "OrderedDict", pops
    # those two and calls STACK_GLOBAL: the real operands are posix.system.  A scanner that
    # only remembered the last strings pushed would wrongly see collections.OrderedDict.
    payload = (
        b"\x80\x04"
        b"\x8c\x05posix\x94"
        b"\x8c\x06system\x94"
        b"\x8c\x0bcollections"
        b"\x8c\x0bOrderedDict"
        b"00"  # POP POP
        b"\x93"  # STACK_GLOBAL
        b"\x8c\x04true\x85R."  # ("true",) REDUCE STOP
    )
    assert find_pickle_globals(io.BytesIO(payload)) == ["posix.system"]
    path = _zip_with_data_pkl(tmp_path / "base.pt", payload)
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        load_checkpoint(path)


def test_stack_global_through_memo_is_resolved():
    # module and name come back from the memo (BINGET) rather than literal pushes
    payload = (
        b"\x80\x04"
        b"\x8c\x08builtins\x94"  # memo 0
        b"\x8c\x04eval\x94"  # memo 1
        b"0"
        b"0"
        b"h\x00h\x01\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL
        b"\x8c\x011\x85R."
    )
    assert find_pickle_globals(io.BytesIO(payload)) == ["builtins.eval"]
    computed = b"\x80\x04N\x8c\x04eval\x93."  # module operand is None: not a literal string
    assert find_pickle_globals(io.BytesIO(computed)) == ["<computed STACK_GLOBAL>"]


def test_protocol2_names_are_translated_and_ext_codes_flagged():
    assert find_pickle_globals(io.BytesIO(pickle.dumps({1, 2}, protocol=2))) == ["builtins.set"]
    assert find_pickle_globals(io.BytesIO(b"\x80\x02\x82\x01.")) == ["<extension registry code 1>"]
    assert "builtins.set" in ALLOWED_GLOBALS and "builtins.eval" not in ALLOWED_GLOBALS
    assert (
        "torch._utils._rebuild_tensor_v2" in ALLOWED_GLOBALS and "torch.float16" in ALLOWED_GLOBALS
    )


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.* is deprecated, still shipped
def test_torchscript_archive_is_refused(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "scripted.pt"
    torch.jit.save(scripted, str(path))
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_state_dict(path)


# ---------------------------------------------------------------------------------------------
# Damaged and missing files
# ---------------------------------------------------------------------------------------------


def _assert_corrupt(path: Path) -> None:
    for loader in (load_state_dict, load_checkpoint):
        with pytest.raises(CheckpointError) as info:
            loader(path)
        assert not isinstance(info.value, UnsafeCheckpointError)
        msg = str(info.value)
        assert str(path) in msg and "Re-download" in msg and "previous checkpoint" in msg


@pytest.mark.parametrize("zip_format", [True, False])
def test_truncated_torch_checkpoint(tmp_path, zip_format):
    full = tmp_path / "full.pt"
    torch.save(_state(), full, _use_new_zipfile_serialization=zip_format)
    data = full.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 30):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        _assert_corrupt(path)


def test_truncated_safetensors(tmp_path):
    full = save_state_dict(_state(), tmp_path / "full.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full.read_bytes()[:-7])
    _assert_corrupt(cut)


def test_garbage_and_empty_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2000))
    _assert_corrupt(garbage)
    (tmp_path / "garbage.safetensors").write_bytes(os.urandom(2000))
    _assert_corrupt(tmp_path / "garbage.safetensors")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _assert_corrupt(empty)
    zipped = tmp_path / "other.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_state_dict(zipped)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_benign_protocol4_file_gives_a_typed_error(tmp_path):
    # passes our scan (only allowed globals) but torch's weights-only unpickler cannot read it
    torch.save(_state(), tmp_path / "p4.pt", pickle_protocol=4)
    with pytest.raises(CheckpointError, match="Unsupported operand") as info:
        load_state_dict(tmp_path / "p4.pt")
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert "safetensors" in str(info.value)


def test_pickle_that_is_not_a_torch_file(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.safetensors"
    for call in (load_state_dict, load_checkpoint, sha256_file):
        with pytest.raises(WeightsNotFoundError, match="nope.safetensors"):
            call(missing)
    with pytest.raises(FileNotFoundError):  # also catchable as the builtin
        load_state_dict(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="directory"):
        load_state_dict(tmp_path)


# ---------------------------------------------------------------------------------------------
# Hashes
# ---------------------------------------------------------------------------------------------


def test_sha256_and_verify(tmp_path):
    path = tmp_path / "blob.bin"
    data = os.urandom(3000)
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk_size=1000) == want
    assert verify_sha256(path, want.upper()) == want
    wrong = "0" * 64
    with pytest.raises(CheckpointError) as info:
        verify_sha256(path, wrong)
    assert want in str(info.value) and wrong in str(info.value)
    with pytest.raises(ValueError, match="64 hex"):
        verify_sha256(path, "abc")


# ---------------------------------------------------------------------------------------------
# Atomic saving
# ---------------------------------------------------------------------------------------------


def test_savers_replace_old_file_and_leave_no_temp(tmp_path):
    path = tmp_path / "m.safetensors"
    save_state_dict({"a": torch.zeros(1)}, path)
    save_state_dict({"a": torch.ones(1)}, path)
    assert torch.equal(load_state_dict(path)["a"], torch.ones(1))
    ckpt = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, ckpt)
    save_checkpoint({"step": 2}, ckpt)
    assert load_checkpoint(ckpt) == {"step": 2}
    assert _leftovers(tmp_path) == []


def test_failed_save_keeps_old_file(tmp_path, monkeypatch):
    st = save_state_dict(_state(), tmp_path / "keep.safetensors")
    ck = save_checkpoint({"step": 1}, tmp_path / "keep.pt")
    before = {p: p.read_bytes() for p in (st, ck)}

    def half_written(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, ck)

    import safetensors.torch

    def half_written_st(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x08\x00partial")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(safetensors.torch, "save_file", half_written_st)
    with pytest.raises(RuntimeError, match="interrupted"):
        save_state_dict({"a": torch.ones(1)}, st)

    assert {p: p.read_bytes() for p in (st, ck)} == before
    assert _leftovers(tmp_path) == []
    _assert_same(load_state_dict(st), _state())


def test_save_state_dict_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="not a tensor"):
        save_state_dict({"a": 1}, tmp_path / "x.safetensors")  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="metadata"):
        save_state_dict({"a": torch.ones(1)}, tmp_path / "x.safetensors", metadata={"n": 1})
    assert not (tmp_path / "x.safetensors").exists() and _leftovers(tmp_path) == []


def test_atomic_path_is_exported():
    assert weights.atomic_path is atomic_path


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy-pickle"])
def test_torch_file_named_safetensors_says_to_rename_it(tmp_path, zipped):
    path = tmp_path / "model.safetensors"
    torch.save(_state(), path, _use_new_zipfile_serialization=zipped)
    for load in (load_state_dict, load_safetensors_metadata):
        with pytest.raises(CheckpointError, match="not safetensors") as info:
            load(path)
        assert "Rename it to model.pth" in str(info.value)
        assert ("zip archive" in str(info.value)) == zipped
    renamed = path.rename(tmp_path / "model.pth")
    assert torch.equal(load_state_dict(renamed)["conv.weight"], _state()["conv.weight"])


def test_training_arguments_load_only_when_allowed(tmp_path):
    """A training checkpoint with its ``argparse.Namespace`` (MDETR's releases): refused by
    default, loaded with ``allow=("argparse.Namespace",)``; the Namespace's contents stay
    checked, and only the listed plain-data classes can be allowed."""
    import argparse

    from ovseg.weights import load_checkpoint

    state = {"w": torch.arange(3.0)}
    path = tmp_path / "train.pth"
    torch.save({"model": state, "args": argparse.Namespace(lr=0.1, names=["a"])}, path)
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        load_state_dict(path)
    loaded = load_state_dict(path, allow=("argparse.Namespace",))
    assert list(loaded) == ["w"] and torch.equal(loaded["w"], state["w"])
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path)
    hidden = tmp_path / "hidden.pth"
    torch.save({"model": state, "args": argparse.Namespace(hook=os.system)}, hidden)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_state_dict(hidden, allow=("argparse.Namespace",))
    with pytest.raises(ValueError, match="plain-data"):
        load_state_dict(path, allow=("os.system",))
