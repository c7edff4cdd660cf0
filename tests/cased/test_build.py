"""Database builds: corpus reading, resumable chunks, sharding + merge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ovseg.cased import build as db_build
from ovseg.cased.build import build_database, merge_build, read_corpus
from ovseg.cased.database import MANIFEST_NAME, load_database
from ovseg.errors import ConfigError, DatabaseError
from tests.cased.corpus import CORPUS, backbone, corpus  # noqa: F401  (fixtures)


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
