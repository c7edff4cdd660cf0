"""Atomic writes: the final name appears whole or not at all."""

from __future__ import annotations

import os

import pytest

from ovseg.fileio import atomic_path, atomic_write_bytes, atomic_write_json


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_atomic_path_success_and_failure(tmp_path):
    target = tmp_path / "out.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and not tmp.exists()
        tmp.write_text("new")
    assert target.read_text() == "new"

    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []

    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "never.txt"):
            pass
    assert not (tmp_path / "never.txt").exists()


def test_bulk_and_durable_writes_leave_no_temp_files(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"abc")
    atomic_write_bytes(tmp_path / "b.bin", b"xyz", durable=True)
    atomic_write_json(tmp_path / "c.json", {"k": 1})
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.bin", "c.json"]
    assert (tmp_path / "a.bin").read_bytes() == b"abc"


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, durable=False) as tmp:
            tmp.write_text("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["keep.txt"]


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from ovseg.fileio import _DEFAULT_FILE_MODE, atomic_path

    with atomic_path(tmp_path / "weights.bin") as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # as safetensors creates files
        os.close(fd)
    assert stat.S_IMODE((tmp_path / "weights.bin").stat().st_mode) == _DEFAULT_FILE_MODE
