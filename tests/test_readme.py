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


BENCHMARKS = ("voc21", "pc60", "object", "voc20", "pc59", "stuff", "city", "ade")


def table_rows(heading: str, first_cell: str) -> list[list[str]]:
    """Cells of the README table under ``heading`` whose header row starts with ``first_cell``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    lines = text[start:end].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def expand_presets(cell: str) -> list[str]:
    """`name-{a,b}` -> [name-a, name-b]; `name-*` -> the eight benchmark presets of name."""
    pattern = cell.strip("`")
    match = re.fullmatch(r"([\w-]+)-\{([\w,]+)\}", pattern)
    if match:
        return [f"{match[1]}-{suffix}" for suffix in match[2].split(",")]
    assert pattern.endswith("-*"), cell
    return [f"{pattern[:-2]}-{suffix}" for suffix in BENCHMARKS]


def test_the_published_numbers_table_names_every_benchmark_preset():
    from ovseg.config import load_config

    rows = table_rows("### Published numbers: ProxyCLIP and SC-CLIP", "paper's setting")
    assert len(rows) == 5
    for row in rows:
        assert len(row) == 12, row
        names = expand_presets(row[1])
        assert [name.rsplit("-", 1)[1] for name in names] == list(BENCHMARKS), row
        for name in names:
            assert load_config(name)["benchmark"] == name.rsplit("-", 1)[1]
        # a filled cell is an mIoU in percent with one decimal, as the papers print them
        for cell in row[2:11]:
            assert cell == "" or re.fullmatch(r"\d{1,2}\.\d", cell), (row[0], cell)
        assert row[11] in ("[1]", "[2]")


README_BENCHMARKS = {
    "VOC21": "voc21", "PC60": "pc60", "Object": "object", "VOC20": "voc20",
    "PC59": "pc59", "Stuff": "stuff", "City": "city", "ADE": "ade",
}  # fmt: skip
NAME = "(?:" + "|".join(README_BENCHMARKS) + ")"
# "City, ADE 448", "VOC21 0.15 (area 0.1)", "City 224 / 112": benchmarks, then their value
ENTRY = re.compile(rf"((?:{NAME}, )*{NAME}) ([\d.]+(?: / \d+)?(?: \(area [\d.]+\))?)")


def per_benchmark(cell: str) -> dict[str, str]:
    """A settings cell as ``{benchmark: value}``: ``"336; City, ADE 448"`` (default first) or
    ``"VOC21 0.2 (area 0.1), PC60 0.15; none elsewhere"`` (``none`` is ``0``)."""
    values: dict[str, str] = {}
    default = None
    for part in cell.split("; "):
        if part == "none elsewhere":
            default = "0"
        elif re.fullmatch(r"[\d.]+(?: / \d+)?", part):
            default = part
        else:
            entries = list(ENTRY.finditer(part))
            assert ", ".join(m[0] for m in entries) == part, cell  # nothing left unread
            for match in entries:
                for name in match[1].split(", "):
                    values[README_BENCHMARKS[name]] = match[2]
    assert default is not None, cell
    return {benchmark: values.get(benchmark, default) for benchmark in BENCHMARKS}


def test_the_preset_settings_table_matches_the_presets():
    from ovseg.config import load_config

    rows = table_rows("### Published numbers: ProxyCLIP and SC-CLIP", "presets")
    assert len(rows) == 5
    previous: list[str] = []
    for row in rows:
        row = [cell if cell != "as above" else above for cell, above in zip(row, previous or row)]
        model_name, pretrained = re.fullmatch(r"([\w-]+) `(\w+)`", row[1]).groups()
        window, short_side, logit_scale, threshold = map(per_benchmark, row[3:7])
        for name, benchmark in zip(expand_presets(row[0]), BENCHMARKS, strict=True):
            pipeline = load_config(name)["pipeline"]
            backbone, inference = pipeline["backbone"], pipeline["inference"]
            post = pipeline["postprocess"]
            assert (backbone["model_name"], backbone["pretrained"]) == (model_name, pretrained)
            assert ("proxy_model" in backbone) == row[2].startswith("DINO"), name
            assert window[benchmark] == f"{inference['crop_size']} / {inference['stride']}", name
            assert float(short_side[benchmark]) == inference["short_side"], name
            assert float(logit_scale[benchmark]) == pipeline["logit_scale"], name
            probability, _, area = threshold[benchmark].partition(" (area ")
            assert float(probability) == post["prob_threshold"], name
            assert float(area.rstrip(")") or 0) == post["area_threshold"], name
        previous = row
