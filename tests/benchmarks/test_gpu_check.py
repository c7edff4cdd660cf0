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


@pytest.mark.slow
def test_dry_run_writes_one_json_with_every_benchmark(tmp_path):
    proc = _run("--dry-run", "--no-tests", "--out", str(tmp_path / "out"), timeout=900)
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert report["dry_run"] is True and report["passed"] is True
    assert set(report["steps"]) == {"semantic_fp32", "semantic_bf16", "sam"}
    assert report["speedup"]["semantic_fp32"] > 0 and report["speedup"]["semantic_bf16"] > 0
    assert set(report["speedup"]["sam"]) == {"encoder", "proposals", "referring", "instance"}
    fp32 = report["benchmarks"]["semantic_fp32"]
    assert fp32["check"]["unexplained_mismatches"] == 0
    assert report["benchmarks"]["sam"]["sections"]["proposals"]["identical_masks"] >= 1
