"""docs/extending.md's worked examples run as written, in order, from the repository root."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REGISTERED = {
    "point_selector": "BestCellSelector",
    "mask_classifier": "BoxCropClassifier",
    "backbone": "SmoothedClipBackbone",
    "dataset": "FewSyntheticScenes",
    "pipeline": "BoxSegmenter",
}


def test_every_worked_example_runs(monkeypatch):
    from ovseg.registry import _ALL_REGISTRIES

    text = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 5  # selector, classifier, backbone, dataset, task
    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": "extending_examples"}
    try:
        for block in blocks:
            exec(compile(block, "docs/extending.md", "exec"), namespace)  # noqa: S102
        assert namespace["mask"].any() or not namespace["mask"].all()
    finally:  # the examples register into the shared registries: leave them as they were
        for kind, name in REGISTERED.items():
            _ALL_REGISTRIES[kind]._entries.pop(name, None)
