"""The README's Python API examples run as written (from the repository root)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(section: str) -> list[str]:
    """The ```python blocks of the README section titled ``section`` (up to the next ``## ``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end != -1 else None], re.S)


def test_the_python_api_examples_run(monkeypatch):
    # the first two blocks use the embedded preset; later ones need real weights (and a GPU)
    blocks = python_blocks("Python API")[:2]
    assert len(blocks) == 2
    monkeypatch.chdir(ROOT)
    rng = np.random.default_rng(0)
    namespace = {
        "image_a": rng.integers(0, 256, (96, 128, 3), dtype=np.uint8),
        "image_b": rng.integers(0, 256, (80, 112, 3), dtype=np.uint8),
    }
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["result"].sem_seg.shape == (128, 128)
    assert len(namespace["results"]) == 2
    assert namespace["found"].mask.shape == (128, 128)


@pytest.mark.skipif(os.name != "posix", reason="paths in the README use '/'")
def test_the_readme_names_only_files_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in set(re.findall(r"`((?:demo|configs|tools|docs|ovseg)/[\w./-]+\.\w+)`", text)):
        assert (ROOT / path).exists(), path
