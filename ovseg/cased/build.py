"""Building text databases: corpus reading, batched encoding in resumable shards, merging.

A build encodes the corpus chunk by chunk (``chunk = batch_size * chunk_batches`` texts, each
encoded in batches of ``batch_size``) into ``OUT/.build/``::

    plan.json                    corpus sha256 and count, model, batch and chunk sizes, index
    corpus.txt                   the normalised texts (what the database will store)
    shard-<r>-of-<W>/chunk-<c>.npy    (n, D) float32 vectors of chunk c, written atomically
    shard-<r>-of-<W>/done.json   rank r finished its chunks

Rank ``r`` of ``W`` processes (``torchrun`` sets ``RANK`` / ``WORLD_SIZE``; ``--rank`` /
``--world-size`` do the same by hand) encodes the chunks ``c`` with ``c % W == r``. With
``resume`` a chunk already on disk (in any shard folder) is not encoded again, so an interrupted
build, or one continued with another number of processes, loses at most the chunks in flight.
When every chunk exists, the last process to finish (or ``ovseg db merge``) concatenates the
chunks in corpus order, trains / fills the index and writes the database (see
:mod:`ovseg.cased.database`). A single-process build goes through the same chunks and the same
merge, so a sharded build gives the same texts, vectors and index bytes (given the same device
and thread settings, which decide the float rounding of the text encoder).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.cased.corpus import CAPTION_COLUMNS, iter_corpus
from ovseg.cased.database import (
    KINDS,
    MANIFEST_NAME,
    choose_index,
    encode_texts,
    model_identity,
    new_index,
    text_fingerprint,
    write_database,
)
from ovseg.errors import ConfigError, DatabaseError
from ovseg.fileio import atomic_path, atomic_write_json

LOGGER = logging.getLogger(__name__)

WORK_DIRNAME = ".build"
LOCK_NAME = "merge.lock"
__all__ = ["CAPTION_COLUMNS", "build_database", "merge_build", "prepare_corpus", "read_corpus"]
TRAIN_POINTS_PER_LIST = 256  # FAISS k-means samples at most this many points per centroid


# --------------------------------------------------------------------------------- corpus
def read_corpus(
    source: str | os.PathLike, *, column: str | None = None, field: str | None = None
) -> list[str]:
    """Texts of a corpus, normalised, without empty lines and exact duplicates (first kept), as
    a list (small corpora; builds stream with :func:`prepare_corpus`). See
    :mod:`ovseg.cased.corpus` for the formats."""
    texts = list(dict.fromkeys(iter_corpus(source, column=column, field=field)))
    if not texts:
        raise ConfigError(f"Corpus {source} holds no text.")
    return texts


def _text_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def prepare_corpus(
    source: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    column: str | None = None,
    field: str | None = None,
) -> tuple[int, str]:
    """Write the normalised, de-duplicated texts of ``source`` to ``dest`` (one per line, first
    occurrence kept, in corpus order); returns ``(count, sha256 of the file)``.

    Bounded memory: the texts are streamed to a scratch file next to ``dest`` while a 64-bit
    BLAKE2b hash of each is kept (8 bytes per text, about 0.4 GiB for CaSED's 54 M captions);
    the first occurrence of every hash is then copied to ``dest``. Two different texts with the
    same 64-bit hash (odds about 1e-4 for 54 M texts) would keep only the first.

    Raises:
        ConfigError: the source is missing, unreadable, or holds no text.
    """
    dest = Path(dest)
    scratch = dest.with_name(f".{dest.name}.{os.getpid()}.all")
    hashes = np.empty(1 << 16, dtype=np.uint64)
    count = 0
    try:
        with scratch.open("w", encoding="utf-8", newline="\n") as f:
            for text in iter_corpus(source, column=column, field=field):
                if count == len(hashes):
                    hashes = np.resize(hashes, 2 * len(hashes))
                hashes[count] = _text_hash(text)
                count += 1
                f.write(text + "\n")
        if not count:
            raise ConfigError(f"Corpus {source} holds no text.")
        _, first = np.unique(hashes[:count], return_index=True)
        keep = np.zeros(count, dtype=bool)
        keep[first] = True
        digest = hashlib.sha256()
        with (
            atomic_path(dest, durable=True) as tmp,
            scratch.open("rb") as src,
            tmp.open("wb") as out,
        ):
            for line, kept in zip(src, keep):
                if kept:
                    out.write(line)
                    digest.update(line)
        return int(keep.sum()), digest.hexdigest()
    finally:
        scratch.unlink(missing_ok=True)


def iter_corpus_chunks(path: Path, chunk_size: int) -> Iterator[tuple[int, list[str]]]:
    """``(chunk index, texts)`` of a prepared corpus file, ``chunk_size`` texts at a time."""
    with path.open(encoding="utf-8", newline="\n") as f:
        for chunk in itertools.count():
            lines = list(itertools.islice(f, chunk_size))
            if not lines:
                return
            yield chunk, [line[:-1] if line.endswith("\n") else line for line in lines]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------- plan
def dist_position(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` from the arguments or torchrun's ``RANK`` / ``WORLD_SIZE``."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside a world of {world_size} process(es).")
    return rank, world_size


def num_chunks(plan: dict[str, Any]) -> int:
    return -(-int(plan["count"]) // int(plan["chunk_size"]))


def _chunk_range(plan: dict[str, Any], chunk: int) -> tuple[int, int]:
    size = int(plan["chunk_size"])
    return chunk * size, min(int(plan["count"]), (chunk + 1) * size)


def _shard_dir(work: Path, rank: int, world_size: int) -> Path:
    return work / f"shard-{rank:03d}-of-{world_size:03d}"


def _chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:07d}.npy"


def _valid_chunk(path: Path, rows: int, dim: int) -> bool:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return data.dtype == np.float32 and data.shape == (rows, dim)


def find_chunk(work: Path, plan: dict[str, Any], chunk: int) -> Path | None:
    """The valid file of ``chunk`` in any shard folder of ``work``, or None."""
    start, stop = _chunk_range(plan, chunk)
    for path in sorted(work.glob(f"shard-*/{_chunk_name(chunk)}")):
        if _valid_chunk(path, stop - start, int(plan["embed_dim"])):
            return path
    return None


def _save_chunk(path: Path, vectors: np.ndarray) -> None:
    with atomic_path(path, durable=False) as tmp, tmp.open("wb") as f:
        np.save(f, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)


def _read_plan(work: Path) -> dict[str, Any] | None:
    path = work / "plan.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatabaseError(
            f"{path} is damaged ({exc}); delete {work} and start the build again."
        ) from exc


def _same_plan(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = ("texts_sha256", "count", "batch_size", "chunk_size", "model_name", "pretrained",
            "embed_dim", "kind", "index")  # fmt: skip
    differing = [k for k in keys if a.get(k) != b.get(k)]
    stored, current = np.asarray(a["fingerprint"]), np.asarray(b["fingerprint"])
    if stored.shape != current.shape or float((stored * current).sum(axis=1).min()) < 0.99:
        differing.append("model weights")
    return differing


# --------------------------------------------------------------------------------- build
def build_database(
    texts_source: str | os.PathLike,
    backbone: Any,
    out: str | os.PathLike,
    *,
    pretrained: str | None = None,
    kind: str = "captions",
    index: str = "auto",
    batch_size: int = 256,
    chunk_batches: int = 16,
    column: str | None = None,
    field: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    merge: bool = True,
    keep_shards: bool = False,
    progress: bool = True,
    build_command: str | None = None,
    source: str | None = None,
) -> Path | None:
    """Encode ``texts_source`` with ``backbone``'s text tower into the database ``out``.

    This process encodes its share of the chunks (see the module docstring); when every chunk
    exists and ``merge`` is set, it also writes the database and returns ``out``; otherwise it
    returns None (another rank, or ``ovseg db merge``, finishes the build).

    Args:
        texts_source: corpus file or folder (:mod:`ovseg.cased.corpus`: text, CSV / TSV,
            JSONL, Parquet, a Hugging Face datasets folder, or a folder of files), read
            streamed; ``column`` names the CSV / Parquet / datasets column, ``field`` the JSONL
            field (default: the first of caption, title, text, sentence, name, concept).
        backbone: a ClipBackbone; ``pretrained`` is its weight tag (recorded in the manifest).
        kind: ``captions`` or ``concepts`` (how the search turns texts into candidate names).
        index: ``auto``, ``flat``, ``ivf`` or ``ivfpq`` (:func:`~ovseg.cased.database.choose_index`).
        batch_size: texts per text-encoder call; chunk_batches: batches per checkpoint file.
        resume: keep the chunks of an unfinished build of the same corpus and settings.
        overwrite: replace a finished database in ``out`` (it stays readable until the end).
        rank, world_size: this process's share (default: torchrun's environment).
        build_command, source: recorded in the manifest (rebuild hints; default source: the
            corpus path).
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}.")
    if batch_size < 1 or chunk_batches < 1:
        raise ConfigError("batch_size and chunk_batches must be positive.")
    rank, world_size = dist_position(rank, world_size)
    out = Path(out)
    work = out / WORK_DIRNAME
    if (out / MANIFEST_NAME).is_file() and not overwrite and not (work / "plan.json").is_file():
        if resume:
            LOGGER.info("%s is already a finished database; nothing to resume.", out)
            return out
        raise DatabaseError(
            f"{out} already holds a database; pass --overwrite to replace it (or pick another "
            "--out)."
        )
    created = [folder for folder in (out, work) if not folder.exists()]
    staged = work / f"corpus.staged-{rank}.txt"
    try:
        work.mkdir(parents=True, exist_ok=True)
        count, texts_sha256 = prepare_corpus(texts_source, staged, column=column, field=field)
        identity = model_identity(backbone, pretrained)
        plan = {
            "texts_sha256": texts_sha256,
            "count": count,
            "batch_size": int(batch_size),
            "chunk_size": int(batch_size) * int(chunk_batches),
            **identity,
            "fingerprint": text_fingerprint(backbone),
            "kind": kind,
            "index": index,
            "source": source or str(texts_source),
            "build_command": build_command,
        }
        choose_index(count, identity["embed_dim"], index)  # refuse a bad index choice now
        previous = _read_plan(work)
        if previous is not None:
            differing = _same_plan(previous, plan)
            if differing:
                raise DatabaseError(
                    f"{work} holds an unfinished build with other {', '.join(differing)}; "
                    f"delete {work} to start over, or rerun it with its original settings and "
                    "--resume."
                )
            own = _shard_dir(work, rank, world_size)
            if not resume and own.is_dir() and any(own.glob("chunk-*.npy")):
                raise DatabaseError(
                    f"{work} holds an unfinished build of this corpus; pass --resume to continue "
                    f"it (or delete {work} to start over)."
                )
        corpus = work / "corpus.txt"
        if not corpus.is_file() or previous is None:
            os.replace(staged, corpus)  # same bytes as any copy already there (same sha256)
    except BaseException:
        staged.unlink(missing_ok=True)
        for folder in reversed(created):  # leave no empty folder behind a refused corpus
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    staged.unlink(missing_ok=True)
    if previous is None:
        atomic_write_json(work / "plan.json", plan, indent=1)
    _encode_share(corpus, backbone, work, plan, rank, world_size, resume, progress)
    if not merge:
        return None
    missing = [c for c in range(num_chunks(plan)) if find_chunk(work, plan, c) is None]
    if missing:
        LOGGER.info(
            "rank %d finished; %d chunk(s) of other ranks are still missing. The last rank to "
            "finish merges (or run `ovseg db merge --out %s`).",
            rank,
            len(missing),
            out,
        )
        return None
    with _merge_lock(work, wait=False) as locked:
        if not locked:
            return None
        return _merge(out, work, plan, keep_shards=keep_shards, progress=progress)


def _encode_share(
    corpus: Path,
    backbone: Any,
    work: Path,
    plan: dict[str, Any],
    rank: int,
    world_size: int,
    resume: bool,
    progress: bool,
) -> None:
    """Encode this rank's chunks, reading the corpus file one chunk at a time."""
    from tqdm import tqdm

    shard = _shard_dir(work, rank, world_size)
    shard.mkdir(parents=True, exist_ok=True)
    mine = [c for c in range(num_chunks(plan)) if c % world_size == rank]
    todo = {c for c in mine if not (resume and find_chunk(work, plan, c) is not None)}
    total = sum(_chunk_range(plan, c)[1] - _chunk_range(plan, c)[0] for c in todo)
    desc = "encode" if world_size == 1 else f"encode {rank + 1}/{world_size}"
    batch = int(plan["batch_size"])
    with tqdm(total=total, desc=desc, unit="text", disable=not progress,
              position=rank if world_size > 1 else None) as bar:  # fmt: skip
        for chunk, texts in iter_corpus_chunks(corpus, int(plan["chunk_size"])):
            if chunk not in todo:
                continue
            start, stop = _chunk_range(plan, chunk)
            if len(texts) != stop - start:
                raise DatabaseError(
                    f"{corpus} does not match its plan (chunk {chunk}); delete {work} and build "
                    "again."
                )
            vectors = np.empty((len(texts), int(plan["embed_dim"])), dtype=np.float32)
            for offset in range(0, len(texts), batch):
                end = min(len(texts), offset + batch)
                vectors[offset:end] = encode_texts(backbone, texts[offset:end], batch)
                bar.update(end - offset)
            _save_chunk(shard / _chunk_name(chunk), vectors)
    atomic_write_json(shard / "done.json", {"rank": rank, "world_size": world_size,
                                            "chunks": mine})  # fmt: skip


@contextlib.contextmanager
def _merge_lock(work: Path, *, wait: bool, force: bool = False):
    """Yield True when this process holds ``work/merge.lock`` (False: another one does)."""
    path = work / LOCK_NAME
    if force:
        path.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if wait:
            raise DatabaseError(
                f"{path} exists: another process is merging this build. If none is (a merge "
                "was interrupted), run `ovseg db merge` again with --force."
            ) from None
        yield False
        return
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield True
    finally:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            work.rmdir()  # gone when the merge emptied it


def merge_build(
    out: str | os.PathLike, *, keep_shards: bool = False, force: bool = False,
    progress: bool = True,
) -> Path:  # fmt: skip
    """Finish a sharded build in ``out``: check every chunk is there, then write the database.

    Raises:
        DatabaseError: no unfinished build in ``out``, the corpus copy is damaged, or chunks
            are missing (the message names the ranks to rerun with --resume).
    """
    out = Path(out)
    work = out / WORK_DIRNAME
    plan = _read_plan(work)
    if plan is None:
        hint = " (it is already a finished database)" if (out / MANIFEST_NAME).is_file() else ""
        raise DatabaseError(
            f"{out} has no unfinished build to merge{hint}; start one with `ovseg db build`."
        )
    with _merge_lock(work, wait=True, force=force):
        return _merge(out, work, plan, keep_shards=keep_shards, progress=progress)


def _merge(
    out: Path, work: Path, plan: dict[str, Any], *, keep_shards: bool, progress: bool
) -> Path:
    from tqdm import tqdm

    corpus = work / "corpus.txt"
    if not corpus.is_file() or file_sha256(corpus) != plan["texts_sha256"]:
        raise DatabaseError(f"{corpus} does not match its plan; delete {work} and build again.")
    chunks = [find_chunk(work, plan, c) for c in range(num_chunks(plan))]
    missing = [c for c, path in enumerate(chunks) if path is None]
    if missing:
        shards = sorted(work.glob("shard-*"))
        world = int(shards[0].name.rsplit("-", 1)[1]) if shards else 1
        ranks = sorted({c % world for c in missing})
        raise DatabaseError(
            f"{len(missing)} of {len(chunks)} chunks are missing (first: {missing[:5]}); rerun "
            f"`ovseg db build ... --resume` for rank(s) {ranks} of {world}, then merge again."
        )
    dim = int(plan["embed_dim"])
    spec = choose_index(int(plan["count"]), dim, plan["index"])
    index = new_index(spec, dim)
    if not index.is_trained:
        index.train(_training_sample(chunks, plan, spec.nlist))
    for path in tqdm(chunks, desc="index", unit="chunk", disable=not progress):
        index.add(np.ascontiguousarray(np.load(path, allow_pickle=False)))
    identity = {k: plan[k] for k in ("model_name", "pretrained", "embed_dim")}
    write_database(
        out, corpus, index, spec=spec, identity=identity, fingerprint=plan["fingerprint"],
        kind=plan["kind"], source=plan.get("source"), build_command=plan.get("build_command"),
    )  # fmt: skip
    if not keep_shards:
        for child in list(work.iterdir()):
            if child.name != LOCK_NAME:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    return out


def _training_sample(chunks: list[Path], plan: dict[str, Any], nlist: int) -> np.ndarray:
    """Rows to train IVF / PQ on: all of them, or a fixed-seed sample of 256 per list."""
    count = int(plan["count"])
    size = min(count, max(TRAIN_POINTS_PER_LIST * nlist, 2**16))
    rows = np.sort(np.random.default_rng(0).choice(count, size=size, replace=False))
    sample = np.empty((size, int(plan["embed_dim"])), dtype=np.float32)
    filled = 0
    for chunk, path in enumerate(chunks):
        start, stop = _chunk_range(plan, chunk)
        wanted = rows[(rows >= start) & (rows < stop)] - start
        if len(wanted):
            sample[filled : filled + len(wanted)] = np.load(path, mmap_mode="r")[wanted]
            filled += len(wanted)
    return sample


def shard_status(out: str | os.PathLike) -> dict[str, Any] | None:
    """Progress of an unfinished build in ``out`` (chunks present / total), or None."""
    work = Path(out) / WORK_DIRNAME
    plan = _read_plan(work)
    if plan is None:
        return None
    present = sum(find_chunk(work, plan, c) is not None for c in range(num_chunks(plan)))
    return {"chunks": num_chunks(plan), "present": present, "count": plan["count"]}
