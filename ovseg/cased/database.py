"""Text databases for vocabulary-free search: CLIP text embeddings in a FAISS index, plus the texts.

A database folder holds three files; the manifest is written last and names the other two, so
it is the commit point of a build (a reader sees the old database or the new one, never a mix)::

    manifest.json            what the vectors mean and how to check the files (see below)
    index.<sha12>.faiss      ``faiss.write_index`` of an inner-product index (row i = text i)
    texts.<sha12>.txt        UTF-8, one text per line, in index order

The manifest records ``format_version``, ``kind`` (``captions``: candidate names are extracted
from the retrieved texts; ``concepts``: every text is itself a candidate name), the model
(``model_name``, ``pretrained`` tag, ``embed_dim``), ``count``, ``normalization`` (``l2``), the
index parameters, the sha256 and size of both files, a *fingerprint* (the embeddings of a few
fixed probe texts, which catch a model with the right name but other weights) and the command
that rebuilds the database.

Embedding recipe (:func:`encode_texts`): every text is tokenised as is (no prompt template;
open_clip's tokenizer lower-cases, cleans and truncates to the context length), encoded by the
CLIP text tower and L2-normalised. Concept names are stored the same way: CaSED encodes its
candidate names with the bare ``"{}"`` prompt, so a concept's stored vector is exactly the
embedding the scorer compares the image with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import mmap
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.errors import (
    ConfigError,
    DatabaseError,
    DatabaseMismatchError,
    MissingDependencyError,
)
from ovseg.fileio import atomic_path, atomic_write_bytes, atomic_write_json

LOGGER = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATABASE_DIR = Path(__file__).resolve().parents[1] / "model_zoo" / "databases"
KINDS = ("captions", "concepts")
INDEX_TYPES = ("flat", "ivf", "ivfpq")
PROBE_TEXTS = ("a photo of a dog", "red", "an empty street at night", "a diagram of a cell")
FINGERPRINT_MIN_COSINE = 0.99  # fp16 / bf16 / another device stay above 0.999
FLAT_MAX_COUNT = 200_000  # exact search up to here (auto)
IVF_MAX_COUNT = 2_000_000  # IVF-Flat up to here, IVF-PQ above (auto)
MIN_POINTS_PER_CENTROID = 39  # FAISS k-means warns below this
PQ_NBITS = 8
_VERIFIED: dict[tuple[str, int, int], str] = {}


def require_faiss():
    """Import faiss, or raise a MissingDependencyError naming the extra to install."""
    try:
        import faiss
    except ImportError as exc:
        raise MissingDependencyError(
            "Vocabulary-free search needs FAISS; install it with `pip install 'ovseg[vocab]'` "
            "(or `pip install faiss-cpu`)."
        ) from exc
    return faiss


# --------------------------------------------------------------------------------- embedding
def encode_texts(backbone: Any, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Raw texts -> L2-normalised CLIP text embeddings ``(N, D)`` float32 (no templates).

    ``backbone`` is a :class:`~ovseg.models.backbones.clip.ClipBackbone` (its ``model``,
    ``tokenizer`` and ``device`` are used). Batches of ``batch_size`` texts go through the text
    tower (a text's vector depends on its batch only through float rounding; builds fix the
    batches, so that reruns and sharded builds give the same bits).
    """
    texts = list(texts)
    dim = int(backbone.embed_dim)
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    import torch  # here, so that reading a manifest (ovseg list) needs no torch

    out = np.empty((len(texts), dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), max(1, int(batch_size))):
            chunk = texts[start : start + batch_size]
            tokens = backbone.tokenizer(chunk).to(backbone.device)
            embeds = backbone.model.encode_text(tokens).float()
            embeds = embeds / embeds.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            out[start : start + len(chunk)] = embeds.cpu().numpy()
    return out


def model_identity(backbone: Any, pretrained: str | None = None) -> dict[str, Any]:
    """``{model_name, pretrained, embed_dim}`` of a backbone (``pretrained``: its weight tag)."""
    tag = pretrained if pretrained is not None else getattr(backbone, "pretrained", None)
    return {
        "model_name": str(backbone.model_name),
        "pretrained": tag,
        "embed_dim": int(backbone.embed_dim),
    }


def text_fingerprint(backbone: Any) -> list[list[float]]:
    """Embeddings of :data:`PROBE_TEXTS` (rounded), stored in the manifest to identify weights."""
    vectors = encode_texts(backbone, PROBE_TEXTS)
    return [[round(float(v), 6) for v in row] for row in vectors]


# --------------------------------------------------------------------------------- index choice
@dataclass(frozen=True)
class IndexSpec:
    """FAISS index parameters: ``type`` (flat / ivf / ivfpq), IVF lists, PQ sub-quantisers."""

    type: str
    nlist: int = 0
    nprobe: int = 0
    m: int = 0
    nbits: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "nlist": self.nlist, "nprobe": self.nprobe, "m": self.m,
                "nbits": self.nbits}  # fmt: skip


def _pq_subquantizers(dim: int) -> int:
    """Largest divisor of ``dim`` that is at most 64 and leaves sub-vectors of >= 4 dimensions."""
    for m in range(min(64, max(1, dim // 4)), 0, -1):
        if dim % m == 0:
            return m
    return 1


def choose_index(count: int, dim: int, requested: str = "auto") -> IndexSpec:
    """Pick the index for ``count`` vectors of ``dim`` dimensions.

    ``auto``: exact ``flat`` up to 200k texts, ``ivf`` (IVF-Flat) up to 2M, ``ivfpq`` above.
    IVF uses ``nlist = round(4 sqrt(count))`` lists, capped so that every list has at least 39
    training points, and probes ``max(8, nlist / 32)`` of them. IVF-PQ stores ``m`` bytes per
    vector (8-bit codes), with ``m`` the largest divisor of ``dim`` up to 64 and ``dim / 4``.
    """
    if requested not in ("auto", *INDEX_TYPES):
        raise ConfigError(f"index must be auto, {', '.join(INDEX_TYPES)}; got {requested!r}.")
    if count <= 0:
        raise DatabaseError("A database needs at least one text; the corpus is empty.")
    kind = requested
    if kind == "auto":
        kind = "flat" if count <= FLAT_MAX_COUNT else "ivf" if count <= IVF_MAX_COUNT else "ivfpq"
    if kind == "flat":
        return IndexSpec("flat")
    nlist = max(1, min(int(round(4 * math.sqrt(count))), count // MIN_POINTS_PER_CENTROID))
    nprobe = min(nlist, max(8, nlist // 32))
    if kind == "ivf":
        return IndexSpec("ivf", nlist=nlist, nprobe=nprobe)
    if count < MIN_POINTS_PER_CENTROID * 2**PQ_NBITS:
        raise ConfigError(
            f"IVF-PQ needs at least {MIN_POINTS_PER_CENTROID * 2**PQ_NBITS} texts to train its "
            f"codebooks; this corpus has {count}. Use --index flat (or auto)."
        )
    return IndexSpec("ivfpq", nlist=nlist, nprobe=nprobe, m=_pq_subquantizers(dim), nbits=PQ_NBITS)


def new_index(spec: IndexSpec, dim: int):
    """An empty (untrained) inner-product FAISS index for ``spec``."""
    faiss = require_faiss()
    if spec.type == "flat":
        return faiss.IndexFlatIP(dim)
    quantizer = faiss.IndexFlatIP(dim)
    if spec.type == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, spec.nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFPQ(
            quantizer, dim, spec.nlist, spec.m, spec.nbits, faiss.METRIC_INNER_PRODUCT
        )
    index.nprobe = spec.nprobe
    return index


def build_index(vectors: np.ndarray, spec: IndexSpec):
    """Train (IVF) and fill an index with ``vectors`` ``(N, D)`` float32, in row order."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = new_index(spec, vectors.shape[1])
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return index


# --------------------------------------------------------------------------------- paths
def resolve_database_path(path: str | os.PathLike) -> Path:
    """A database folder; a bare name (``shapes-tiny``) not found here means a packaged one."""
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        return candidate
    packaged = DATABASE_DIR / str(path)
    if packaged.is_dir() and not candidate.is_absolute():
        return packaged
    return candidate


def rebuild_command(
    manifest: dict[str, Any] | None, folder: Path, preset: str | None = None
) -> str:
    """The ``ovseg db build`` command that rebuilds ``folder`` (for ``preset`` if given).

    Only the folder given and the database kind (one of :data:`KINDS`) are filled in: the
    manifest's recorded ``build_command`` and ``source`` are not echoed, since anyone who can edit
    the manifest could put a harmful command there.
    """
    import shlex

    kind = (manifest or {}).get("kind")
    kind = kind if kind in KINDS else "captions"
    return (
        f"ovseg db build --texts CORPUS --preset {preset or 'PRESET'} --kind {kind} "
        f"--out {shlex.quote(str(folder))} --overwrite"
    )


# --------------------------------------------------------------------------------- writing
def normalize_text(text: str) -> str:
    """Whitespace collapsed to single spaces (a stored text never spans lines)."""
    return " ".join(str(text).split())


def _write_texts_file(out: Path, source: Path) -> tuple[dict[str, Any], int]:
    """Copy a texts file (one normalised text per line) into ``out`` under its content name,
    streamed; returns its ``files`` entry and line count."""
    digest, size, count = hashlib.sha256(), 0, 0
    with source.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            count += block.count(b"\n")
    name = f"texts.{digest.hexdigest()[:12]}.txt"
    with atomic_path(out / name, durable=True) as tmp:
        shutil.copyfile(source, tmp)
    return {"name": name, "sha256": digest.hexdigest(), "bytes": size}, count


def write_database(
    out_dir: str | os.PathLike,
    texts: Sequence[str] | Path,
    index: Any,
    *,
    spec: IndexSpec,
    identity: dict[str, Any],
    fingerprint: list[list[float]],
    kind: str = "captions",
    source: str | None = None,
    build_command: str | None = None,
) -> Path:
    """Write a database folder: index and texts (each atomically), then the manifest.

    ``texts`` must already be normalised (:func:`normalize_text`) and match ``index`` row for
    row: a sequence of texts, or the path of a file holding them one per line (copied streamed,
    never loaded whole). Files of a previous database in ``out_dir`` are removed after the new
    manifest is in place. Returns the folder.
    """
    faiss = require_faiss()
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}.")
    out = Path(out_dir)
    files = {}
    if isinstance(texts, Path):
        files["texts"], count = _write_texts_file(out, texts)
    else:
        texts_bytes = "".join(f"{text}\n" for text in texts).encode("utf-8")
        if texts_bytes.count(b"\n") != len(texts):
            raise DatabaseError("A text spans several lines; pass texts through normalize_text().")
        count = len(texts)
    if index.ntotal != count:
        raise DatabaseError(f"The index holds {index.ntotal} vectors for {count} texts.")
    index_bytes = faiss.serialize_index(index).tobytes()
    roles = [("index", index_bytes, "faiss")]
    if not isinstance(texts, Path):
        roles.append(("texts", texts_bytes, "txt"))
    for role, data, suffix in roles:
        digest = hashlib.sha256(data).hexdigest()
        name = f"{role}.{digest[:12]}.{suffix}"
        atomic_write_bytes(out / name, data, durable=True)
        files[role] = {"name": name, "sha256": digest, "bytes": len(data)}
    files = {role: files[role] for role in ("index", "texts")}
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        **identity,
        "count": count,
        "normalization": "l2",
        "metric": "inner_product",
        "encoding": "raw text, no template; CLIP text tower; L2-normalised",
        "index": spec.to_dict(),
        "files": files,
        "fingerprint": {"texts": list(PROBE_TEXTS), "vectors": fingerprint},
        "source": source,
        "build_command": build_command,
    }
    atomic_write_json(out / MANIFEST_NAME, manifest, indent=1)
    keep = {files["index"]["name"], files["texts"]["name"]}
    for old in [*out.glob("index.*.faiss"), *out.glob("texts.*.txt")]:
        if old.name not in keep:
            with contextlib.suppress(OSError):
                old.unlink()
    return out


# --------------------------------------------------------------------------------- reading
def read_manifest(folder: str | os.PathLike, preset: str | None = None) -> dict[str, Any]:
    """The manifest of a database folder, checked for the keys and format version it needs
    (``preset``: named in the build command of the error for a missing database)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        hint = "the folder does not exist" if not folder.exists() else f"it has no {MANIFEST_NAME}"
        raise DatabaseError(
            f"{folder} is not an ovseg text database ({hint}). Build one from a caption or "
            f"concept list with `ovseg db build --texts CORPUS --preset {preset or 'PRESET'} "
            f"--out {folder}` (CaSED's caption database: the PMD recipe of docs/vocab_free.md), "
            "or pass --db DIR."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatabaseError(
            f"{path} is damaged ({exc}); rebuild the database with "
            f"`{rebuild_command(None, folder)}`."
        ) from exc
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise DatabaseError(
            f"{folder} has database format {version!r}; this ovseg reads format "
            f"{FORMAT_VERSION}. Rebuild it with `{rebuild_command(manifest, folder)}`."
        )
    required = ("kind", "model_name", "embed_dim", "count", "index", "files", "fingerprint")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise DatabaseError(
            f"{path} lacks {', '.join(missing)}; rebuild the database with "
            f"`{rebuild_command(manifest, folder)}`."
        )
    return manifest


def _verify_file(folder: Path, entry: dict[str, Any], manifest: dict[str, Any]) -> Path:
    path = folder / str(entry["name"])
    rebuild = rebuild_command(manifest, folder)
    if not path.is_file():
        raise DatabaseError(f"{path} is missing from the database; rebuild it with `{rebuild}`.")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if _VERIFIED.get(key) == entry["sha256"]:
        return path
    if stat.st_size != entry.get("bytes", stat.st_size):
        raise DatabaseError(
            f"{path} has {stat.st_size} bytes but the manifest says {entry['bytes']}: the file "
            f"is truncated or damaged. Rebuild the database with `{rebuild}`."
        )
    from ovseg.weights import sha256_file  # imports torch

    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise DatabaseError(
            f"{path} does not match the sha256 in its manifest (damaged or modified). "
            f"Rebuild the database with `{rebuild}`."
        )
    _VERIFIED[key] = digest
    return path


class TextStore:
    """Random access to the lines of a texts file through a memory map (no full load)."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self._file = path.open("rb")
        size = path.stat().st_size
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        ends = np.flatnonzero(np.frombuffer(self._map, dtype=np.uint8) == 10) if size else []
        self._ends = np.asarray(ends, dtype=np.int64)
        if len(self._ends) != count:
            raise DatabaseError(f"{path} has {len(self._ends)} lines, the manifest {count}.")
        self._starts = np.concatenate([[0], self._ends[:-1] + 1]).astype(np.int64)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> str:
        i = int(i)
        if not 0 <= i < len(self._ends):
            raise IndexError(f"text {i} is outside 0..{len(self._ends) - 1}")
        return bytes(self._map[self._starts[i] : self._ends[i]]).decode("utf-8")

    def all(self) -> list[str]:
        return [self[i] for i in range(len(self))]

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        self._file.close()


class TextDatabase:
    """A loaded, verified text database (see the module docstring for the layout).

    Attributes:
        path: the folder.
        manifest: its manifest (dict).
        index: the FAISS index.
        texts: :class:`TextStore`, ``texts[i]`` is the text of vector ``i``.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], index: Any, texts: TextStore):
        self.path = path
        self.manifest = manifest
        self.index = index
        self.texts = texts

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def dim(self) -> int:
        return int(self.manifest["embed_dim"])

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def search(
        self, queries: np.ndarray, k: int, *, reconstruct: bool = False
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``k`` inner products for queries ``(Q, D)`` (L2-normalise them first).

        Returns ``(scores (Q, k) float32, ids (Q, k) int64)`` with ``-1`` ids where fewer than
        ``k`` texts were found; with ``reconstruct`` also the stored vectors ``(Q, k, D)``
        (approximate for IVF-PQ).
        """
        queries = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.dim))
        k = max(1, int(k))
        if reconstruct:
            return self.index.search_and_reconstruct(queries, k)
        return self.index.search(queries, k)

    def check_model(
        self, backbone: Any, pretrained: str | None = None, *, preset: str | None = None
    ) -> None:
        """Refuse a backbone other than the one that built the database (name, tag, dim, weights).

        Raises:
            DatabaseMismatchError: naming both models and the command that rebuilds the
                database for ``preset``.
        """
        have = model_identity(backbone, pretrained)
        want = {k: self.manifest.get(k) for k in ("model_name", "pretrained", "embed_dim")}
        rebuild = rebuild_command(self.manifest, self.path, preset or "PRESET")
        differs = have["model_name"] != want["model_name"] or have["embed_dim"] != want["embed_dim"]
        if have["pretrained"] is not None and want["pretrained"] is not None:
            differs = differs or have["pretrained"] != want["pretrained"]
        if differs:
            raise DatabaseMismatchError(
                f"Database {self.path} was built with {want['model_name']} / "
                f"{want['pretrained']} ({want['embed_dim']}-d); this pipeline uses "
                f"{have['model_name']} / {have['pretrained']} ({have['embed_dim']}-d). Rebuild "
                f"the database with this preset: `{rebuild}`."
            )
        stored = np.asarray(self.manifest["fingerprint"]["vectors"], dtype=np.float32)
        probe_texts = self.manifest["fingerprint"].get("texts", list(PROBE_TEXTS))
        current = encode_texts(backbone, probe_texts)
        cosine = float((stored * current).sum(axis=1).min()) if len(stored) else 1.0
        if stored.shape != current.shape or cosine < FINGERPRINT_MIN_COSINE:
            raise DatabaseMismatchError(
                f"Database {self.path} was built with other {want['model_name']} weights (its "
                f"probe texts embed differently: cosine {cosine:.3f}). Rebuild the database "
                f"with this preset: `{rebuild}`."
            )

    def close(self) -> None:
        self.texts.close()


def load_database(
    path: str | os.PathLike,
    *,
    backbone: Any = None,
    pretrained: str | None = None,
    preset: str | None = None,
    verify: bool = True,
) -> TextDatabase:
    """Load and check a database folder (a bare name means a packaged database).

    Checks: the manifest exists and has this format; with ``verify`` the sha256 and size of the
    index and texts files match it; the index holds ``count`` vectors of ``embed_dim``; with a
    ``backbone``, :meth:`TextDatabase.check_model`. Every failure is a :class:`DatabaseError`
    whose message gives the command that rebuilds the database.
    """
    faiss = require_faiss()
    folder = resolve_database_path(path)
    manifest = read_manifest(folder, preset)
    if manifest["kind"] not in KINDS:
        raise DatabaseError(f"{folder}: unknown database kind {manifest['kind']!r}.")
    files = manifest["files"]
    if verify:
        index_path = _verify_file(folder, files["index"], manifest)
        texts_path = _verify_file(folder, files["texts"], manifest)
    else:
        index_path, texts_path = folder / files["index"]["name"], folder / files["texts"]["name"]
    rebuild = rebuild_command(manifest, folder)
    try:
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
        index = faiss.read_index(
            str(index_path), flags if manifest["index"]["type"] != "flat" else 0
        )
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise DatabaseError(
            f"{index_path} cannot be read as a FAISS index ({first_line}); rebuild the "
            f"database with `{rebuild}`."
        ) from exc
    count, dim = int(manifest["count"]), int(manifest["embed_dim"])
    if index.ntotal != count or index.d != dim:
        raise DatabaseError(
            f"{index_path} holds {index.ntotal} vectors of {index.d} dimensions; the manifest "
            f"says {count} of {dim}. Rebuild the database with `{rebuild}`."
        )
    if manifest["index"].get("nprobe"):
        index.nprobe = int(manifest["index"]["nprobe"])
    database = TextDatabase(folder, manifest, index, TextStore(texts_path, count))
    if backbone is not None:
        database.check_model(backbone, pretrained, preset=preset)
    return database


def describe(database: TextDatabase) -> dict[str, Any]:
    """JSON-ready summary of a database (``ovseg db info``)."""
    m = database.manifest
    return {
        "path": str(database.path),
        "kind": m["kind"],
        "count": m["count"],
        "model_name": m["model_name"],
        "pretrained": m.get("pretrained"),
        "embed_dim": m["embed_dim"],
        "index": m["index"],
        "bytes": sum(int(f["bytes"]) for f in m["files"].values()),
        "source": m.get("source"),
        "build_command": m.get("build_command"),
        "format_version": m["format_version"],
    }
