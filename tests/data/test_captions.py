import csv

import numpy as np
import pytest

from ovseg.data.caption_writer import CaptionWriter, mentions_any
from ovseg.data.captions import CsvCaptionDataset
from ovseg.data.synthetic import CLASS_NAMES, UNSEEN_CLASSES, generate_scene, scene_rng
from ovseg.data.synthetic_vocab import STUFF_CLASSES, UNSEEN_IDS
from ovseg.errors import DatasetError
from ovseg.registry import DATASETS


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def test_csv_layout_and_reader(synthetic_world):
    out, summary = synthetic_world
    csv_path = out / "captions/train.csv"
    rows = _rows(csv_path)
    assert rows[0] == ["filepath", "title"]
    assert len(rows) - 1 == summary["captions"]["num_train"]
    assert all(not r[0].startswith("/") and (csv_path.parent / r[0]).is_file() for r in rows[1:])
    ds = CsvCaptionDataset(csv_path)
    assert len(ds) == len(rows) - 1
    item = ds[0]
    assert item["image"].shape == (32, 32, 3) and item["image"].dtype == np.uint8
    assert item["caption"] == rows[1][1]
    sized = DATASETS.build(
        {"type": "CsvCaptionDataset", "csv_path": str(csv_path), "transform": lambda im: im.size}
    )
    assert sized[1]["image"] == (32, 32)


def test_entries_cover_scene_objects_and_stuff():
    writer = CaptionWriter("unused", crop_size=24, seed=0)
    kinds = {"scene": 0, "obj": 0, "stuff": 0}
    for i in range(10):
        scene = generate_scene(scene_rng(0, "train", i), split="train")
        entries = writer.entries(scene, "train", i + 1)
        names = [e[0] for e in entries]
        assert names[0] == f"train_{i + 1:08d}_scene.jpg" and entries[0][2] == scene.caption
        for k, obj in enumerate(scene.instances):
            _, image, caption = entries[names.index(f"train_{i + 1:08d}_obj{k}.jpg")]
            assert image.shape == (24, 24, 3)
            assert caption.startswith(
                (
                    obj.name,
                    f"a {obj.name}",
                    f"an {obj.name}",
                    f"a photo of a{'n' if obj.name[0] in 'aeiou' else ''} {obj.name}",
                    "a close-up of",
                )
            )
            assert obj.name in caption
        for file_name, _, caption in entries:
            kind = file_name.rsplit("_", 1)[1].split(".")[0].rstrip("0123456789")
            kinds[kind] += 1
            if kind == "stuff":
                assert mentions_any(caption, STUFF_CLASSES)
                assert not mentions_any(caption, [n for n in CLASS_NAMES if n not in STUFF_CLASSES])
    assert kinds["scene"] == 10 and kinds["obj"] >= 10 and kinds["stuff"] >= 8
    # deterministic
    scene = generate_scene(scene_rng(0, "train", 0), split="train")
    a, b = writer.entries(scene, "train", 1), writer.entries(scene, "train", 1)
    assert [(n, c) for n, _, c in a] == [(n, c) for n, _, c in b]


def test_no_unseen_class_in_train_captions(synthetic_world, tmp_path):
    out, _ = synthetic_world
    train = [r[1] for r in _rows(out / "captions/train.csv")[1:]]
    assert train and not any(mentions_any(c, UNSEEN_CLASSES) for c in train)
    # over many scenes (written in memory) as well, while val captions do name unseen classes
    writer = CaptionWriter(tmp_path, crop_size=16)
    train_caps = [
        c
        for i in range(80)
        for _, _, c in writer.entries(generate_scene(scene_rng(1, "train", i)), "train", i)
    ]
    assert not any(mentions_any(c, UNSEEN_CLASSES) for c in train_caps)
    val_caps = [
        c
        for i in range(30)
        for _, _, c in writer.entries(generate_scene(scene_rng(1, "val", i), split="val"), "val", i)
    ]
    assert any(mentions_any(c, UNSEEN_CLASSES) for c in val_caps)


def test_writer_refuses_unseen_in_train(tmp_path):
    writer = CaptionWriter(tmp_path, crop_size=16)
    for i in range(50):
        scene = generate_scene(scene_rng(0, "val", i), split="val")
        if any(o.class_id in UNSEEN_IDS for o in scene.instances):
            break
    with pytest.raises(ValueError, match="unseen"):
        writer.add(scene, "train", 1)


def test_mentions_whole_words_only():
    assert mentions_any("a red star on sand", ["red star", "star"]) == ["red star", "star"]
    assert mentions_any("a red stars", ["red star"]) == []


def test_reader_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        CsvCaptionDataset(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("image,text\na.jpg,a cat\n")
    with pytest.raises(DatasetError, match=r"columns \['image,text'\]"):
        CsvCaptionDataset(bad)
    assert len(CsvCaptionDataset(bad, sep=",", img_key="image", caption_key="text")) == 1
    empty = tmp_path / "empty.csv"
    empty.write_text("filepath\ttitle\n")
    with pytest.raises(DatasetError, match="no rows"):
        CsvCaptionDataset(empty)
    holes = tmp_path / "holes.csv"
    holes.write_text("filepath\ttitle\n\ta cat\n")
    with pytest.raises(DatasetError, match="lines"):
        CsvCaptionDataset(holes)
