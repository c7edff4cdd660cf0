"""demo/examples: the stored example scenes are what make_examples.py writes, and the quick-start
scene's ground truth matches its picture."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[2] / "demo" / "examples"


def _make_examples():
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int16)


def test_stored_examples_are_reproduced(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["make_examples.py", "--out", str(tmp_path)])
    _make_examples().main()
    written = sorted(p.name for p in tmp_path.iterdir())
    assert {"shapes_scene.jpg", "shapes_scene.txt", "shapes_scene_gt.png"} <= set(written)
    for name in written:
        stored = EXAMPLES / name
        assert stored.is_file(), f"make_examples.py writes {name}, which is not stored"
        if name.endswith(".jpg"):
            # JPEG encoders may differ by a grey level between libjpeg builds
            assert np.abs(_pixels(stored) - _pixels(tmp_path / name)).max() <= 2
        elif name.endswith(".png"):  # compared as pixels: zlib builds compress differently
            assert np.array_equal(_pixels(stored), _pixels(tmp_path / name)), name
        else:
            assert stored.read_bytes() == (tmp_path / name).read_bytes(), name
    assert "shapes_scene: an image of a blue square" in capsys.readouterr().out


def test_quick_start_ground_truth_covers_its_objects():
    classes = [line.strip() for line in (EXAMPLES / "shapes_scene.txt").read_text().splitlines()]
    truth = np.asarray(Image.open(EXAMPLES / "shapes_scene_gt.png"))
    image = _pixels(EXAMPLES / "shapes_scene.jpg")
    assert truth.shape == image.shape[:2] and truth.max() < len(classes)
    for position, name in enumerate(classes):
        region = image[truth == position]
        assert len(region) > 100, name
        red, green, blue = region.mean(axis=0)
        if name.startswith("red"):
            assert red > 150 and green < 80 and blue < 80, name
        elif name.startswith("blue"):
            assert blue > 150 and red < 80, name


def test_vocabulary_labels_refuses_a_scene_outside_the_vocabulary():
    module = _make_examples()
    scene = module.quick_start_scene()
    with pytest.raises(ValueError, match=r"blue ring.*water"):
        module.vocabulary_labels(scene, ("red star", "wall"))
