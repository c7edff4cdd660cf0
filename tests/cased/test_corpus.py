"""Corpus formats for ``ovseg db build``: text, CSV, JSONL, Parquet, datasets folders."""

from __future__ import annotations

import builtins
import hashlib
import json

import pytest

from ovseg.cased import build as db_build
from ovseg.cased.build import iter_corpus_chunks, prepare_corpus, read_corpus
from ovseg.cased.corpus import corpus_files, iter_corpus
from ovseg.errors import ConfigError, MissingDependencyError

ROWS = ["a red star", "  a   blue ring ", "", "a red star", "sand"]
EXPECTED = ["a red star", "a blue ring", "sand"]


def _hide_module(monkeypatch, name):
    real_import = builtins.__import__

    def fake_import(module, *args, **kwargs):
        if module == name or module.startswith(name + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_text_and_csv_with_a_column_option(tmp_path):
    (tmp_path / "c.txt").write_text("\n".join(ROWS) + "\n")
    assert read_corpus(tmp_path / "c.txt") == EXPECTED
    (tmp_path / "c.csv").write_text("id,caption,alt\n" + "".join(
        f'{i},"{r}",x{i}\n' for i, r in enumerate(ROWS)))  # fmt: skip
    assert read_corpus(tmp_path / "c.csv") == EXPECTED
    assert read_corpus(tmp_path / "c.csv", column="alt")[:2] == ["x0", "x1"]


def test_jsonl_with_a_field_option(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [json.dumps({"meta": {"caption": r}, "text": f"t{i}"}) for i, r in enumerate(ROWS)]
    path.write_text("\n".join(lines) + "\n\n")
    assert read_corpus(path) == [f"t{i}" for i in range(5)]  # "text" is a caption field
    assert read_corpus(path, field="meta.caption") == EXPECTED
    with pytest.raises(ConfigError, match="line 1 has no field 'label'.*--field"):
        read_corpus(path, field="label")
    (tmp_path / "bad.jsonl").write_text('{"caption": "ok"}\n{"caption": \n')
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        read_corpus(tmp_path / "bad.jsonl")


def test_parquet_read_in_batches(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "c.parquet"
    table = pa.table({"url": [f"u{i}" for i in range(5)], "TEXT": ROWS[:2] + [None] + ROWS[3:]})
    pq.write_table(table, path, row_group_size=2)
    monkeypatch.setattr("ovseg.cased.corpus.BATCH_ROWS", 2)
    assert read_corpus(path) == EXPECTED
    assert read_corpus(path, column="url") == [f"u{i}" for i in range(5)]
    with pytest.raises(ConfigError, match="no column 'caption'.*--column"):
        read_corpus(path, column="caption")


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "c.parquet").write_bytes(b"PAR1")
    _hide_module(monkeypatch, "pyarrow")
    with pytest.raises(MissingDependencyError, match="pip install 'ovseg\\[corpus\\]'"):
        read_corpus(tmp_path / "c.parquet")


def test_hugging_face_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"caption": ROWS, "n": list(range(5))}).save_to_disk(str(folder))
    assert corpus_files(folder) == [(folder, "hf")]
    assert read_corpus(folder) == EXPECTED
    both = tmp_path / "dd"
    datasets.DatasetDict({
        "validation": datasets.Dataset.from_dict({"sentence": ["val text"]}),
        "train": datasets.Dataset.from_dict({"sentence": ["train text", "val text"]}),
    }).save_to_disk(str(both))  # fmt: skip
    assert read_corpus(both) == ["train text", "val text"]  # splits in name order
    assert list(iter_corpus(folder, column="n")) == ["0", "1", "2", "3", "4"]  # numbers as text


def test_datasets_folder_without_datasets_is_a_clear_error(tmp_path, monkeypatch):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{}")
    _hide_module(monkeypatch, "datasets")
    with pytest.raises(MissingDependencyError, match="pip install 'ovseg\\[corpus\\]'"):
        read_corpus(folder)


def test_folder_of_mixed_files_in_path_order(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"caption": "from jsonl"}\n')
    (tmp_path / "a.csv").write_text("title\nfrom csv\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("from txt\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("hidden\n")
    (tmp_path / "notes.md").write_text("ignored\n")
    assert read_corpus(tmp_path) == ["from csv", "from jsonl", "from txt"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("not a corpus\n")
    with pytest.raises(ConfigError, match="holds no corpus file"):
        read_corpus(tmp_path / "docs")


def test_prepare_corpus_streams_and_deduplicates(tmp_path, monkeypatch):
    source = tmp_path / "c.txt"
    texts = [f"caption {i % 700}" for i in range(2000)]
    source.write_text("\n".join(texts) + "\n")
    monkeypatch.setattr(db_build, "read_corpus", None)  # the build never lists the corpus
    count, digest = prepare_corpus(source, tmp_path / "out.txt")
    kept = (tmp_path / "out.txt").read_text().splitlines()
    assert count == 700 and kept == [f"caption {i}" for i in range(700)]
    assert digest == hashlib.sha256((tmp_path / "out.txt").read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".out.txt.*"))  # the scratch file is gone
    chunks = list(iter_corpus_chunks(tmp_path / "out.txt", 300))
    assert [c for c, _ in chunks] == [0, 1, 2] and sum(len(t) for _, t in chunks) == 700
    assert chunks[2][1][-1] == "caption 699"
    with pytest.raises(ConfigError, match="holds no text"):
        (tmp_path / "empty.txt").write_text("\n \n")
        prepare_corpus(tmp_path / "empty.txt", tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists()


def test_a_refused_corpus_leaves_no_folder_behind(tmp_path):
    from ovseg.cased.build import build_database

    (tmp_path / "c.jsonl").write_text('{"caption": "a cat"}\n')
    with pytest.raises(ConfigError, match="no field 'label'"):
        build_database(tmp_path / "c.jsonl", None, tmp_path / "db", field="label")
    assert not (tmp_path / "db").exists()
