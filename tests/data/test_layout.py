"""Shared layout helpers of the dataset readers."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.data.layout import (
    files_by_key,
    load_classes,
    pair_files,
    read_split_file,
    reduce_zero_label,
    resolve_root,
    shown,
)
from ovseg.errors import DatasetError

TREE = "Expected tree: <root>/data/{img,ann}"


def test_reduce_zero_label_matches_mmseg():
    raw = np.array([0, 1, 2, 150, 255], np.uint8)
    # mmseg: label[label == 0] = 255; label -= 1; label[label == 254] = 255 (on uint8)
    ref = raw.copy()
    ref[ref == 0] = 255
    ref = ref - 1
    ref[ref == 254] = 255
    out = reduce_zero_label(raw)
    assert out.dtype == np.int64 and out.tolist() == ref.tolist() == [255, 0, 1, 149, 255]


def test_files_by_key_suffixes_recursion_and_exclusions(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x_gt.png", "y.PNG", "y_labelTrainIds.png", "z.txt"):
        (tmp_path / name).write_bytes(b"")
    flat = files_by_key(tmp_path, ".png", exclude=("_labelTrainIds.png",))
    assert sorted(flat) == ["y"]
    assert sorted(files_by_key(tmp_path, "_gt.png", recursive=True)) == ["a/x"]


def test_pair_files_reports_both_directions(tmp_path):
    images = {"a": tmp_path / "a.jpg", "b": tmp_path / "b.jpg"}
    labels = {"a": tmp_path / "a.png", "c": tmp_path / "c.png"}
    with pytest.raises(DatasetError, match=r"1 of 2 images .* have no label <id>\.png .*: b"):
        pair_files(images, labels, tmp_path, tmp_path, "<id>.png", TREE)
    with pytest.raises(DatasetError, match=r"1 labels .* have no image .*: c"):
        pair_files({"a": images["a"]}, labels, tmp_path, tmp_path, "<id>.png", TREE)
    with pytest.raises(DatasetError, match="holds no images"):
        pair_files({}, labels, tmp_path, tmp_path, "<id>.png", TREE)
    pairs = pair_files({"a": images["a"]}, {"a": labels["a"]}, tmp_path, tmp_path, "", TREE)
    assert pairs == [(images["a"], labels["a"])]


def test_resolve_root_and_split_file(tmp_path):
    (tmp_path / "data" / "img").mkdir(parents=True)
    assert resolve_root(tmp_path, ("data",), ("img",), "Toy", TREE) == tmp_path / "data"
    assert resolve_root(tmp_path / "data", ("data",), ("img",), "Toy", TREE) == tmp_path / "data"
    with pytest.raises(DatasetError, match="not a Toy folder") as info:
        resolve_root(tmp_path / "data" / "img", ("data",), ("img",), "Toy", TREE)
    assert TREE in str(info.value) and "datasets/README.md" in str(info.value)
    split = tmp_path / "val.txt"
    split.write_text("a\n\n b \n")
    assert read_split_file(split, TREE) == ["a", "b"]
    split.write_text("\n")
    with pytest.raises(DatasetError, match="lists no sample ids"):
        read_split_file(split, TREE)


def test_load_classes_counts_and_shown():
    assert len(load_classes("voc21.txt", 21, "VOC")) == 21
    with pytest.raises(DatasetError, match="VOC has 20 classes but"):
        load_classes("voc21.txt", 20, "VOC")
    assert shown(list("abcdefg")) == "a, b, c, d, e and 2 more"
