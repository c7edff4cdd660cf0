"""ExportSession: manifest, resumption, a format added on resume, options checked."""

from __future__ import annotations

import json

import pytest

from ovseg.errors import ConfigError
from ovseg.export.session import ExportSession
from ovseg.structures import Instances

from .conftest import CLASSES, H, W


def test_interrupted_session_resumes_and_rebuilds(tmp_path, instances, semantic):
    root = tmp_path / "export"
    first = ExportSession(root, ["coco", "cvat"])
    first.add("a.png", "a", (H, W), instances)
    summary = first.finish(complete=False)
    assert not summary["complete"] and not (root / "coco" / "annotations.json").exists()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["images"] == {"a.png": "a"} and manifest["class_names"] == CLASSES

    second = ExportSession(root, ["coco", "cvat", "yolo"], resume=True)
    assert not second.has("a.png", "a")  # yolo has not got it yet: predict it again
    second.add("a.png", "a", (H, W), instances)
    assert not second.has("b.png", "b")
    renamed = Instances(instances.masks[:1], instances.boxes[:1], [0.5], [0], ["newcomer"])
    second.add("b.png", "b", (H, W), renamed)
    summary = second.finish()
    coco = json.loads((root / "coco" / "annotations.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["a.png", "b.png"]
    assert [c["name"] for c in coco["categories"]] == [*CLASSES, "newcomer"]
    assert summary["images"] == 2

    third = ExportSession(root, ["coco", "cvat", "yolo"], resume=True)
    assert third.has("a.png", "a") and third.has("b.png", "b")
    third.finish()
    again = json.loads((root / "coco" / "annotations.json").read_text())
    assert again == coco
    assert json.loads((root / "manifest.json").read_text())["complete"] is True


def test_resume_with_other_options_is_refused(tmp_path, instances):
    root = tmp_path / "export"
    session = ExportSession(root, ["yolo"], polygon_tolerance=1.0)
    session.add("a.png", "a", (H, W), instances)
    session.finish()
    with pytest.raises(ConfigError, match="same options"):
        ExportSession(root, ["yolo"], polygon_tolerance=2.0, resume=True)
    fresh = ExportSession(root, ["yolo"], polygon_tolerance=2.0)  # no resume: starts over
    fresh.finish()
    assert not (root / "yolo" / "labels" / "a.txt").exists()
