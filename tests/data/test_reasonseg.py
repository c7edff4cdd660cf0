"""ReasonSegDataset on files the test writes in the released layout (images + same-stem JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ovseg.data.reasonseg import (
    ReasonSegDataset,
    polygons_to_label,
    read_annotation,
    reasonseg_question,
)
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS

H, W = 24, 32


def _write(folder, stem, text, is_sentence, shapes, raw=None):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(folder / f"{stem}.jpg")
    body = (
        raw
        if raw is not None
        else json.dumps({"text": text, "is_sentence": is_sentence, "shapes": shapes})
    )
    (folder / f"{stem}.json").write_bytes(body.encode() if isinstance(body, str) else body)


def _rect(label, x0, y0, x1, y1):
    return {
        "label": label,
        "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]],
        "shape_type": "polygon",
    }


@pytest.fixture
def root(tmp_path):
    split = tmp_path / "reason_seg" / "ReasonSeg" / "val"
    # a target rectangle with an ignored hole inside; a deprecated flag shape that is dropped
    _write(split, "a", ["the thing you sit on", "what holds the cup"], True,
           [_rect("target", 2, 2, 20, 14), _rect("ignore", 6, 6, 10.9, 9.7),
            _rect("flag", 0, 0, 31, 23)])  # fmt: skip
    _write(split, "b", ["Chair"], False, [_rect("target", 25, 15, 30, 20)])
    return tmp_path


def test_mask_follows_lisa_drawing(root):
    data = ReasonSegDataset(root, split="val")
    item = data[0]
    label = item["label"]
    # filled polygon including its outline, vertices truncated: columns 2..20, rows 2..14
    expected = np.zeros((H, W), np.uint8)
    expected[2:15, 2:21] = 1
    expected[6:10, 6:11] = 255  # 10.9 -> 10, 9.7 -> 9; drawn later because it is smaller
    np.testing.assert_array_equal(label, expected)
    (query,) = item["queries"]  # LISA scores the first query only
    assert query["question"] == " the thing you sit on Please output segmentation mask."
    assert query["kind"] == "long" and query["answer"] == "[SEG]."
    np.testing.assert_array_equal(query["masks"][0], expected == 1)
    np.testing.assert_array_equal(query["ignore"], expected == 255)


def test_small_target_on_large_ignore_wins():
    shapes = [
        {"label": "ignore", "points": np.array([[0, 0], [9, 0], [9, 9], [0, 9]], float)},
        {"label": "target", "points": np.array([[3, 3], [5, 3], [5, 5], [3, 5]], float)},
    ]
    label = polygons_to_label(shapes, 12, 12)
    assert (label[3:6, 3:6] == 1).all() and (label[0:10, 0:10] != 0).all()
    assert label[0, 0] == 255 and label[11, 11] == 0


def test_all_queries_short_questions_and_subsets(root):
    data = ReasonSegDataset(root / "reason_seg" / "ReasonSeg", split="val", queries="all")
    assert [len(data[i]["queries"]) for i in range(2)] == [2, 1]
    assert data[1]["queries"][0]["question"] == (
        " What is Chair in this image? Please output segmentation mask."
    )
    assert reasonseg_question(" x ", True) == " x Please output segmentation mask."
    short = ReasonSegDataset(root, split="val", subset="short")
    assert len(short) == 1 and short[0]["queries"][0]["kind"] == "short"
    built = DATASETS.build({"type": "ReasonSegDataset", "root": str(root), "split": "val"})
    assert len(built) == 2


def test_cp1252_file_is_read(root):
    folder = root / "reason_seg" / "ReasonSeg" / "val"
    text = json.dumps(
        {"text": ["caf\u00e9 sign"], "is_sentence": False, "shapes": []}, ensure_ascii=False
    )
    _write(folder, "c", None, None, None, raw=text.encode("cp1252"))
    assert read_annotation(folder / "c.json")["text"] == ["caf\u00e9 sign"]


@pytest.mark.parametrize(
    "raw, message",
    [
        ("{not json", "not valid JSON"),
        ('{"text": ["a"], "shapes": []}', "lacks is_sentence"),
        ('{"text": [], "is_sentence": true, "shapes": []}', "non-empty list"),
        ('{"text": ["a"], "is_sentence": true, "shapes": [{"label": "target"}]}', "needs points"),
        (
            '{"text": ["a"], "is_sentence": true, "shapes": [{"points": [[1, 2]]}]}',
            "no string label",
        ),
    ],
)
def test_malformed_json_is_a_dataset_error(tmp_path, raw, message):
    _write(tmp_path / "val", "x", None, None, None, raw=raw)
    data = ReasonSegDataset(tmp_path, split="val")
    with pytest.raises(DatasetError, match=message):
        data[0]


def test_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a ReasonSeg folder"):
        ReasonSegDataset(tmp_path, split="val")
    (tmp_path / "val").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "val" / "lonely.jpg")
    with pytest.raises(DatasetError, match=r"no <stem>\.json"):
        ReasonSegDataset(tmp_path, split="val")
    with pytest.raises(DatasetError, match="split"):
        ReasonSegDataset(tmp_path, split="dev")
