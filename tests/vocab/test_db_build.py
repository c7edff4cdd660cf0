"""Database builds: corpus reading, resumable chunks, sharding + merge, the `ovseg db` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from ovseg.errors import ConfigError, DatabaseError
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.vocab import db_build
from ovseg.vocab.database import MANIFEST_NAME, load_database
from ovseg.vocab.db_build import build_database, merge_build, read_corpus
from ovseg.vocab.db_cli import build_parser, info_parser, merge_parser, search_parser
from tests.conftest import randomize_

WORDS = ["cat", "dog", "car", "tree", "boat", "lamp", "chair", "river", "cloud", "horse"]
CORPUS = [f"a {a} next to a {b} number {i}" for i, (a, b) in
          enumerate((a, b) for a in WORDS for b in WORDS)]  # fmt: skip


@pytest.fixture(scope="module")
def backbone(tiny_model_names, one_torch_thread):
    model = ClipBackbone(tiny_model_names["vit"], templates="photo")
    randomize_(model.model, seed=0)
    return model


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n")
    return path


def _files(folder):
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    return {role: (folder / f["name"]).read_bytes() for role, f in manifest["files"].items()}


def _all_vectors(folder):
    db = load_database(folder)
    return db.index.reconstruct_n(0, len(db)), db.texts.all()


def _assert_same_database(a, b):
    # Bitwise equality by design: every build encodes the same batches of the same texts (the
    # chunk plan fixes batch membership whatever the sharding), so the arithmetic is identical.
    assert _files(a) == _files(b)  # same index bytes and texts
    vectors_a, texts_a = _all_vectors(a)
    vectors_b, texts_b = _all_vectors(b)
    assert texts_a == texts_b
    np.testing.assert_array_equal(vectors_a, vectors_b)
    queries = vectors_a[:7]
    np.testing.assert_array_equal(
        load_database(a).search(queries, 5)[1], load_database(b).search(queries, 5)[1]
    )


# ----------------------------------------------------------------------------- corpus
def test_read_corpus_text_folder_and_csv(tmp_path):
    (tmp_path / "one.txt").write_text("  a   cat \n\nb dog\na cat\n")
    sub = tmp_path / "folder"
    sub.mkdir()
    (sub / "b.txt").write_text("second\n")
    (sub / "a.txt").write_text("first\r\nsecond\n")
    (tmp_path / "caps.csv").write_text("filepath\ttitle\nx.jpg\tthe title\ny.jpg\tline\n")
    (tmp_path / "caps2.csv").write_text('id,caption\n1,"with, comma"\n2,plain\n')
    assert read_corpus(tmp_path / "one.txt") == ["a cat", "b dog"]
    assert read_corpus(sub) == ["first", "second"]
    assert read_corpus(tmp_path / "caps.csv") == ["the title", "line"]
    assert read_corpus(tmp_path / "caps2.csv") == ["with, comma", "plain"]
    assert read_corpus(tmp_path / "caps2.csv", column="id") == ["1", "2"]
    with pytest.raises(ConfigError, match="no column 'text'.*--column"):
        read_corpus(tmp_path / "caps.csv", column="text")
    with pytest.raises(ConfigError, match="does not exist"):
        read_corpus(tmp_path / "missing.txt")


# ----------------------------------------------------------------------------- resume
def test_resumed_build_equals_uninterrupted(tmp_path, corpus, backbone, monkeypatch):
    whole = build_database(corpus, backbone, tmp_path / "whole", batch_size=8, chunk_batches=2,
                           progress=False)  # fmt: skip
    calls = {"n": 0}
    real = db_build.encode_texts

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # in the middle of the third chunk
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(db_build, "encode_texts", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_database(corpus, backbone, out, batch_size=8, chunk_batches=2, progress=False)
    assert not (out / MANIFEST_NAME).exists()
    assert len(list((out / ".build").glob("shard-*/chunk-*.npy"))) == 2
    with pytest.raises(DatabaseError, match="pass --resume"):
        build_database(corpus, backbone, out, batch_size=8, chunk_batches=2, progress=False)
    with pytest.raises(DatabaseError, match="other batch_size, chunk_size"):
        build_database(corpus, backbone, out, batch_size=4, chunk_batches=2, resume=True,
                       progress=False)  # fmt: skip
    monkeypatch.setattr(db_build, "encode_texts", real)
    counted = {"texts": 0}

    def counting(backbone_, texts, batch_size=256):
        counted["texts"] += len(texts)
        return real(backbone_, texts, batch_size)

    monkeypatch.setattr(db_build, "encode_texts", counting)
    assert build_database(corpus, backbone, out, batch_size=8, chunk_batches=2, resume=True,
                          progress=False) == out  # fmt: skip
    assert counted["texts"] == len(CORPUS) - 2 * 16  # the two finished chunks were kept
    assert not (out / ".build").exists()
    _assert_same_database(whole, out)


def test_existing_database_needs_overwrite(tmp_path, corpus, backbone):
    out = build_database(corpus, backbone, tmp_path / "db", progress=False)
    with pytest.raises(DatabaseError, match="--overwrite"):
        build_database(corpus, backbone, out, progress=False)
    assert build_database(corpus, backbone, out, resume=True, progress=False) == out
    build_database(corpus, backbone, out, overwrite=True, kind="concepts", progress=False)
    assert load_database(out).kind == "concepts"


# ----------------------------------------------------------------------------- shards
@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_sharded_build_equals_single_process(tmp_path, corpus, backbone, index):
    options = dict(batch_size=4, chunk_batches=3, index=index, progress=False)
    single = build_database(corpus, backbone, tmp_path / "single", **options)
    out = tmp_path / "sharded"
    for rank in range(3):
        assert build_database(corpus, backbone, out, rank=rank, world_size=3, merge=False,
                              **options) is None  # fmt: skip
    assert sorted(p.name for p in (out / ".build").glob("shard-*")) == [
        "shard-000-of-003", "shard-001-of-003", "shard-002-of-003"]  # fmt: skip
    assert merge_build(out, progress=False) == out
    _assert_same_database(single, out)


def test_last_rank_to_finish_merges(tmp_path, corpus, backbone):
    out = tmp_path / "db"
    options = dict(batch_size=8, world_size=2, progress=False)
    assert build_database(corpus, backbone, out, rank=1, **options) is None
    assert not (out / MANIFEST_NAME).exists()
    assert build_database(corpus, backbone, out, rank=0, **options) == out
    assert len(load_database(out, backbone=backbone)) == len(CORPUS)


def test_merge_names_the_missing_ranks(tmp_path, corpus, backbone):
    out = tmp_path / "db"
    build_database(corpus, backbone, out, batch_size=8, chunk_batches=1, rank=0, world_size=4,
                   merge=False, progress=False)  # fmt: skip
    with pytest.raises(DatabaseError, match=r"rank\(s\) \[1, 2, 3\] of 4"):
        merge_build(out)
    with pytest.raises(DatabaseError, match="no unfinished build"):
        merge_build(tmp_path / "elsewhere")
    (out / ".build" / "merge.lock").write_text("1")
    with pytest.raises(DatabaseError, match="--force"):
        merge_build(out)


def test_resume_with_another_world_size(tmp_path, corpus, backbone):
    options = dict(batch_size=8, chunk_batches=1, progress=False)
    single = build_database(corpus, backbone, tmp_path / "single", **options)
    out = tmp_path / "db"
    build_database(corpus, backbone, out, rank=0, world_size=4, merge=False, **options)
    assert build_database(corpus, backbone, out, resume=True, **options) == out
    _assert_same_database(single, out)


# ----------------------------------------------------------------------------- commands
@pytest.fixture
def tiny_preset(tmp_path, tiny_model_names):
    path = tmp_path / "tiny.yaml"
    cfg = {
        "pipeline": {
            "type": "SemanticSegmenter",
            "backbone": {
                "type": "ClipBackbone",
                "model_name": tiny_model_names["vit"],
                "templates": "photo",
            },  # fmt: skip
            "inference": {"mode": "whole"},
        }
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_db_commands(tmp_path, corpus, tiny_preset, capsys, one_torch_thread):
    import torch

    out = tmp_path / "db"
    torch.manual_seed(0)  # every command builds the random-init model anew: the same one
    args = build_parser().parse_intermixed_args(
        [
            "--texts",
            str(corpus),
            "--preset",
            str(tiny_preset),
            "--out",
            str(out),
            "--batch-size",
            "16",
            "--kind",
            "concepts",
            "--quiet",
        ]  # fmt: skip
    )
    assert args.func(args) == 0
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["kind"] == "concepts" and "--preset" in manifest["build_command"]
    args = info_parser().parse_intermixed_args([str(out), "--json"])
    assert args.func(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == len(CORPUS) and info["index"]["type"] == "flat"
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)).save(image)
    args = search_parser().parse_intermixed_args(
        [
            str(image),
            "--db",
            str(out),
            "--preset",
            str(tiny_preset),
            "--box",
            "0,0,20,20",
            "--json",
            "--top",
            "2",
        ]  # fmt: skip
    )
    torch.manual_seed(1)
    with pytest.raises(DatabaseError, match="other ovseg-test-vit weights"):
        args.func(args)
    torch.manual_seed(0)
    assert args.func(args) == 0
    found = json.loads(capsys.readouterr().out)
    assert 1 <= len(found["names"]) <= 2
    assert all(entry["name"] in CORPUS for entry in found["names"])
    with pytest.raises(ConfigError, match="x1,y1,x2,y2"):
        args = search_parser().parse_intermixed_args(
            [str(image), "--db", str(out), "--preset", str(tiny_preset), "--box", "1,2"]
        )
        args.func(args)
    sharded = tmp_path / "sharded"
    for rank in (0, 1):
        args = build_parser().parse_intermixed_args(
            [
                "--texts",
                str(corpus),
                "--preset",
                str(tiny_preset),
                "--out",
                str(sharded),
                "--rank",
                str(rank),
                "--world-size",
                "2",
                "--no-merge",
                "--quiet",
            ]  # fmt: skip
        )
        torch.manual_seed(0)
        assert args.func(args) == 0
    args = merge_parser().parse_intermixed_args(["--out", str(sharded), "--quiet"])
    assert args.func(args) == 0
    assert len(load_database(sharded)) == len(CORPUS)


def test_db_commands_through_the_ovseg_command(tmp_path, corpus, tiny_preset, monkeypatch,
                                               capsys, one_torch_thread):  # fmt: skip
    """The entries ovseg.cli's COMMANDS takes for the `db` group (lazily imported factories)."""
    import torch

    from ovseg import cli

    for name in ("build", "merge", "info", "search"):
        monkeypatch.setitem(cli.COMMANDS, f"db {name}",
                            (f"ovseg.vocab.db_cli:{name}_parser", f"{name} a text database"))  # fmt: skip
    out = tmp_path / "db"
    torch.manual_seed(0)
    assert cli.main(["db", "build", "--texts", str(corpus), "--preset", str(tiny_preset),
                     "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert cli.main(["db", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == len(CORPUS)
    assert cli.main(["db", "merge", "--out", str(out)]) == 2  # nothing to merge: a clean error
    assert "no unfinished build" in capsys.readouterr().err


def test_info_reports_an_unfinished_build(tmp_path, corpus, backbone, capsys):
    out = tmp_path / "db"
    build_database(corpus, backbone, out, batch_size=8, chunk_batches=1, rank=1, world_size=2,
                   merge=False, progress=False)  # fmt: skip
    args = info_parser().parse_intermixed_args([str(out), "--json"])
    assert args.func(args) == 0
    pending = json.loads(capsys.readouterr().out)["unfinished_build"]
    assert pending == {"chunks": 13, "present": 6, "count": len(CORPUS)}
    args = info_parser().parse_intermixed_args([str(tmp_path / "nothing")])
    with pytest.raises(DatabaseError, match="not an ovseg text database"):
        args.func(args)
