"""tools/gpu_check.sh: valid bash, clear usage errors, and a dry run through the same Python
entry points (the device tests' CPU runs are skipped here: this suite runs them itself)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_the_script_is_valid_bash_with_usage():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    usage = _run("--help")
    assert usage.returncode == 0 and "--dry-run" in usage.stdout
    wrong = _run("--fast")
    assert wrong.returncode == 2 and "unknown option --fast" in wrong.stderr


def test_bad_budget_is_a_usage_error():
    proc = _run("--budget", "soon")
    assert proc.returncode == 2 and "--budget takes whole seconds" in proc.stderr


def test_a_spent_budget_skips_steps_and_still_writes_the_json(tmp_path):
    """Budget 0: every step is recorded as skipped (not lost), and the run fails."""
    proc = _run("--dry-run", "--no-tests", "--budget", "0", "--out", str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert proc.returncode == 1 and report["passed"] is False
    assert set(report["steps"]) == {"read", "detect", "semantic_fp32", "semantic_bf16", "sam"}
    assert all(step["status"].startswith("skipped") for step in report["steps"].values())


def test_a_failing_step_keeps_the_others_figures(tmp_path):
    """A Python that breaks the benchmark entry points: each step records its error (exit
    status, log tail) and the script goes on to the next."""
    fake = tmp_path / "python"
    fake.write_text(
        f'#!/usr/bin/env bash\ncase "$1" in tools/*) echo "boom in $1" >&2; exit 3 ;; esac\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--no-tests", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert proc.returncode == 1
    assert len(report["steps"]) == 5
    for name, step in report["steps"].items():
        assert step["exit_status"] == 3 and step["status"] == "failed"
        assert "boom in tools/benchmark" in step["log_tail"], name


@pytest.mark.slow
def test_dry_run_writes_one_json_with_every_benchmark(tmp_path):
    proc = _run("--dry-run", "--no-tests", "--out", str(tmp_path / "out"), timeout=900)
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert report["dry_run"] is True and report["passed"] is True
    assert set(report["steps"]) == {"read", "detect", "semantic_fp32", "semantic_bf16", "sam"}
    summary = report["summary"]
    assert summary["semantic_fp32"]["speedup"] > 0 and summary["semantic_bf16"]["speedup"] > 0
    assert set(summary["sam"]["speedup"]) == {"encoder", "proposals", "referring", "instance"}
    fp32 = report["benchmarks"]["semantic_fp32"]
    assert fp32["check"]["unexplained_mismatches"] == 0
    assert report["benchmarks"]["sam"]["sections"]["proposals"]["identical_masks"] >= 1
    # the READ query and the detector + SAM steps ran their tiny models end to end
    read = report["benchmarks"]["read"]
    assert read["answer"]["masks"] == 1 and read["settings"]["precision"] == "bf16"
    assert summary["read"]["seconds_median"] > 0 and summary["read"]["met"] is None
    detect = report["benchmarks"]["detect"]
    assert detect["instances_per_image"] == [10, 10]
    assert set(summary["detect"]["stages_ms_per_image"]) == {"pipeline", "detector", "sam_encoder"}
    assert report["machine"]["modules"]["torch"].startswith("2.")
