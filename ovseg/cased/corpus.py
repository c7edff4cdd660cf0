"""Reading a caption or concept corpus, streamed, from the formats people keep them in.

A corpus source is one of:

* a text file (``.txt`` or any unknown suffix): one text per line;
* a CSV / TSV file (``.csv``, ``.tsv``; a tab in the header line also means TSV): the column
  ``column``, or the first of :data:`CAPTION_COLUMNS` it has;
* a JSON Lines file (``.jsonl``, ``.ndjson``): one JSON object per line, its field ``field``
  (``a.b`` reads a nested object), or the first of :data:`CAPTION_COLUMNS` the first record has;
* a Parquet file (``.parquet``, needs ``pyarrow``): the column ``column`` (or the first caption
  column), read in record batches;
* a Hugging Face ``datasets`` folder written by ``save_to_disk`` (it holds ``dataset_info.json``
  or ``dataset_dict.json``; needs ``datasets``): the column ``column``, every split of a
  ``DatasetDict`` in name order, read from the memory-mapped Arrow files in batches;
* a folder of such files: every ``.txt`` / ``.csv`` / ``.tsv`` / ``.jsonl`` / ``.ndjson`` /
  ``.parquet`` file below it (recursively, hidden ones excepted), sorted by path.

Every reader yields texts one at a time (a record batch at most is held), so a corpus of tens of
millions of captions is read in bounded memory. :func:`iter_corpus` normalises whitespace and
drops empty texts; de-duplication is the build's job (:func:`ovseg.cased.build.prepare_corpus`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ovseg.cased.database import normalize_text
from ovseg.errors import ConfigError, MissingDependencyError

CAPTION_COLUMNS = ("caption", "title", "text", "sentence", "name", "concept")
SUFFIX_FORMATS = {
    ".txt": "txt",
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
HF_MARKERS = ("dataset_info.json", "dataset_dict.json")
BATCH_ROWS = 65536


def _pick_column(
    names: Iterable[str], wanted: str | None, where: str, option: str = "--column"
) -> str:
    """The column called ``wanted`` (case-insensitive), or the first caption column."""
    names = list(names)
    lowered = {str(name).lower().strip(): name for name in names}
    if wanted is None:
        found = next((lowered[c] for c in CAPTION_COLUMNS if c in lowered), None)
    else:
        found = lowered.get(wanted.lower().strip())
    if found is None:
        want = repr(wanted) if wanted else f"one of {', '.join(CAPTION_COLUMNS)}"
        raise ConfigError(
            f"{where} has no column {want} (its columns: {', '.join(map(str, names)) or 'none'}); "
            f"name the caption column with {option}."
        )
    return found


def _as_text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where} holds a {type(value).__name__}, not a text; pick a text column.")


# --------------------------------------------------------------------------------- readers
def _read_txt(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        yield from f


def _read_csv(path: Path, column: str | None) -> Iterator[str]:
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as f:
        head = f.readline()
        delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in head else ","
        f.seek(0)
        reader = csv.DictReader(f, delimiter=delimiter)
        found = _pick_column(reader.fieldnames or [], column, str(path))
        for row in reader:
            yield row[found] or ""


def _lookup(record: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _read_jsonl(path: Path, field: str | None) -> Iterator[str]:
    """Texts of the field ``field`` (or the first caption field of the first record); a record
    without it counts as empty, but the first record must have it (a wrong name stops at once)."""
    chosen, first = field, True
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path} line {number} is not JSON ({exc.msg}).") from None
            if not isinstance(record, Mapping):
                raise ConfigError(f"{path} line {number} is not a JSON object.")
            if chosen is None:
                chosen = _pick_column(record.keys(), None, f"{path} (line {number})", "--field")
            found, value = _lookup(record, chosen)
            if not found and first:
                raise ConfigError(
                    f"{path} line {number} has no field {chosen!r} (its fields: "
                    f"{', '.join(map(str, record.keys())) or 'none'}); name it with --field."
                )
            first = False
            yield _as_text(value, f"{path} line {number}, field {chosen!r},")


def _read_parquet(path: Path, column: str | None) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError(
            f"Reading {path} needs pyarrow: pip install 'ovseg[corpus]' (or pip install "
            "pyarrow); or convert the corpus to CSV / JSONL / text."
        ) from exc
    try:
        parquet = pq.ParquetFile(str(path))
    except Exception as exc:  # pyarrow raises its own error types for damaged files
        raise ConfigError(f"{path} cannot be read as Parquet ({exc}).") from exc
    found = _pick_column(parquet.schema_arrow.names, column, str(path))
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[found]):
        for value in batch.column(0).to_pylist():
            yield _as_text(value, f"{path} column {found!r}")


def is_hf_dataset_folder(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``datasets``' ``save_to_disk``."""
    return path.is_dir() and any((path / marker).is_file() for marker in HF_MARKERS)


def _read_hf_dataset(path: Path, column: str | None) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        datasets = None
    if datasets is None or not hasattr(datasets, "load_from_disk"):
        raise MissingDependencyError(
            f"{path} is a Hugging Face datasets folder; reading it needs datasets: pip install "
            "'ovseg[corpus]' (or pip install datasets)."
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for damaged folders
        raise ConfigError(f"{path} cannot be loaded with datasets.load_from_disk ({exc}).") from exc
    parts = (
        [(name, loaded[name]) for name in sorted(loaded)]
        if isinstance(loaded, datasets.DatasetDict)
        else [("", loaded)]
    )
    for split, dataset in parts:
        where = f"{path} split {split!r}" if split else str(path)
        found = _pick_column(dataset.column_names, column, where)
        for batch in dataset.select_columns([found]).iter(batch_size=BATCH_ROWS):
            for value in batch[found]:
                yield _as_text(value, f"{where} column {found!r}")


# --------------------------------------------------------------------------------- sources
def corpus_files(source: str | os.PathLike) -> list[tuple[Path, str]]:
    """``[(path, format)]`` of a corpus source, in reading order (see the module docstring)."""
    path = Path(source).expanduser()
    if is_hf_dataset_folder(path):
        return [(path, "hf")]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in SUFFIX_FORMATS
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise ConfigError(
                f"{path} holds no corpus file ({', '.join(sorted(SUFFIX_FORMATS))}) and is no "
                "Hugging Face datasets folder."
            )
        return [(p, SUFFIX_FORMATS[p.suffix.lower()]) for p in files]
    if path.is_file():
        return [(path, SUFFIX_FORMATS.get(path.suffix.lower(), "txt"))]
    raise ConfigError(
        f"Corpus {path} does not exist; give a text, CSV, JSONL or Parquet file, a folder of "
        "them, or a Hugging Face datasets folder."
    )


def iter_raw_texts(
    source: str | os.PathLike, *, column: str | None = None, field: str | None = None
) -> Iterator[str]:
    """The texts of ``source`` as stored (lines keep their line ends)."""
    for path, fmt in corpus_files(source):
        if fmt == "csv":
            yield from _read_csv(path, column)
        elif fmt == "jsonl":
            yield from _read_jsonl(path, field if field is not None else column)
        elif fmt == "parquet":
            yield from _read_parquet(path, column)
        elif fmt == "hf":
            yield from _read_hf_dataset(path, column)
        else:
            yield from _read_txt(path)


def iter_corpus(
    source: str | os.PathLike, *, column: str | None = None, field: str | None = None
) -> Iterator[str]:
    """Normalised (:func:`~ovseg.cased.database.normalize_text`), non-empty texts of ``source``,
    in order, duplicates included."""
    for raw in iter_raw_texts(source, column=column, field=field):
        text = normalize_text(raw)
        if text:
            yield text
