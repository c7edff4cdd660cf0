"""CaSED search: retrieval, de-duplication and scoring pinned to hand computations."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import faiss
import numpy as np
import pytest
import torch

from ovseg.cased.build import build_database
from ovseg.cased.database import (
    PROBE_TEXTS,
    IndexSpec,
    build_index,
    model_identity,
    text_fingerprint,
    write_database,
)
from ovseg.cased.search import CasedSearch, cased_scores, clip_preprocess, deduplicate
from ovseg.errors import ConfigError
from ovseg.models.backbones.clip import ClipBackbone
from ovseg.registry import VOCAB_SOURCES
from tests.conftest import randomize_


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


class TableBackbone:
    """A 2-d 'CLIP' whose text tower looks vectors up in a table (for hand computations)."""

    model_name, embed_dim, image_size, logit_scale = "table-clip", 2, 4, 10.0
    device = torch.device("cpu")

    def __init__(self, table: dict[str, list[float]]):
        probes = {text: unit(200 + 7 * i) for i, text in enumerate(PROBE_TEXTS)}
        self.table = {**probes, **table}
        self.keys = list(self.table)
        vectors = torch.tensor([self.table[k] for k in self.keys])
        self.model = SimpleNamespace(encode_text=lambda tokens: vectors[tokens])

    def tokenizer(self, texts):
        return torch.tensor([self.keys.index(t) for t in texts])


def table_database(folder, backbone, texts, kind):
    vectors = np.asarray([backbone.table[t] for t in texts], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    spec = IndexSpec("flat")
    return write_database(folder, texts, build_index(vectors, spec), spec=spec,
                          identity=model_identity(backbone), kind=kind,
                          fingerprint=text_fingerprint(backbone))  # fmt: skip


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.hypot(*a) / math.hypot(*b)


# ----------------------------------------------------------------------------- formulas
def test_scores_match_hand_computation():
    image = [3.0 * v for v in unit(15)]  # not normalised
    texts = [unit(10), [2 * v for v in unit(40)], unit(120)]
    cands = [unit(0), unit(60), [0.5 * v for v in unit(-30)]]
    scale, alpha = 12.0, 0.7
    mean = [sum(t[d] / math.hypot(*t) for t in texts) / 3 for d in range(2)]
    p_img = softmax([scale * cosine(image, c) for c in cands])
    p_txt = softmax([scale * cosine(mean, c) for c in cands])
    expected = [alpha * a + (1 - alpha) * b for a, b in zip(p_img, p_txt)]
    got = cased_scores(torch.tensor(image), torch.tensor(texts), torch.tensor(cands), scale, alpha)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert abs(float(got.sum()) - 1) < 1e-6
    # the text term averages normalised texts: scaling one text changes nothing
    scaled = torch.tensor([unit(10), unit(40), unit(120)])
    np.testing.assert_allclose(
        cased_scores(torch.tensor(image), scaled, torch.tensor(cands), scale, alpha).numpy(),
        expected, rtol=1e-5,
    )  # fmt: skip


def reference_dedup(ids, vectors, threshold=0.94):
    """The reference's procedure re-derived: FAISS range search, connected components."""
    stop = list(ids).index(-1) if -1 in list(ids) else len(ids)
    emb = np.ascontiguousarray(vectors[:stop], dtype=np.float32)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    lims, _, found = index.range_search(emb, threshold)
    neighbours = defaultdict(list)
    for i in range(len(emb)):
        neighbours[i] += [int(j) for j in found[lims[i] : lims[i + 1]]]
    seen, drop = set(), set()
    for node in list(neighbours):
        if node in seen:
            continue
        todo, group = {node}, []
        while todo:
            current = todo.pop()
            seen.add(current)
            todo |= set(neighbours[current]) - seen
            group.append(current)
        drop |= set(group[1:])
    removed = {int(ids[i]) for i in drop}
    kept = []
    for i in range(stop):
        if int(ids[i]) not in removed:
            removed.add(int(ids[i]))
            kept.append(i)
    return kept


def test_dedup_keeps_the_first_of_each_group():
    vectors = np.asarray([unit(0), unit(15), unit(30), unit(90), unit(91)], dtype=np.float32)
    ids = np.asarray([4, 7, 9, 2, 3])
    # 0~15 and 15~30 are linked (cos 0.966), 0 and 30 are not (0.866): one group via 15
    assert deduplicate(ids, vectors) == [0, 3]
    assert deduplicate(ids, vectors, threshold=0.99) == [0, 1, 2, 3]
    assert deduplicate(np.asarray([5, 6, -1, -1]), vectors[[0, 3, 1, 2]]) == [0, 1]  # cut at -1
    apart = np.asarray([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    assert deduplicate(np.asarray([5, 5, 6]), apart) == [0, 2]  # a repeated id goes too
    for cos, linked in ((0.9401, True), (0.9399, False)):
        pair = np.asarray([[1.0, 0.0], [cos, math.sqrt(1 - cos**2)]], dtype=np.float32)
        assert deduplicate(np.asarray([0, 1]), pair) == ([0] if linked else [0, 1])


def test_dedup_matches_the_reference_procedure():
    rng = np.random.default_rng(0)
    for seed in range(20):
        centres = rng.standard_normal((3, 16))
        vectors = centres[rng.integers(0, 3, 10)] + 0.25 * rng.standard_normal((10, 16))
        ids = rng.permutation(100)[:10]
        if seed % 4 == 0:
            ids[7:] = -1
        assert deduplicate(ids, vectors) == reference_dedup(ids, vectors.astype(np.float32))


def test_clip_preprocess_resizes_short_side_and_crops_the_centre():
    image = torch.zeros(1, 3, 20, 40)
    image[..., 2:38] = 1.0  # covers the central half (10:30) with room for the bicubic kernel
    out = clip_preprocess(image, 10)
    assert out.shape == (1, 3, 10, 10)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-6)
    assert clip_preprocess(torch.rand(1, 3, 8, 8), 8).shape == (1, 3, 8, 8)


# ----------------------------------------------------------------------------- full search
def test_concept_search_by_hand(tmp_path):
    angles = {"cat": 0, "kitten": 10, "dog": 40, "car": 120, "truck": 125}
    backbone = TableBackbone({name: unit(a) for name, a in angles.items()})
    db = table_database(tmp_path / "db", backbone, list(angles), "concepts")
    search = CasedSearch(backbone, db, k=4)
    assert search.logit_scale == 10.0 and search.extractor is None
    image = [3 * v for v in unit(15)]
    result = search.search(embedding=torch.tensor(image))
    # nearest 4: kitten, cat, dog, car; cat duplicates the better-ranked kitten (cos 10 deg)
    assert result.retrieved == ["kitten", "dog", "car"]
    np.testing.assert_allclose(result.similarities, [cosine(image, unit(a)) for a in (10, 40, 120)],
                               rtol=1e-5)  # fmt: skip
    kept = [unit(10), unit(40), unit(120)]
    mean = [sum(v[d] for v in kept) / 3 for d in range(2)]
    p_img = softmax([10 * cosine(image, v) for v in kept])
    p_txt = softmax([10 * cosine(mean, v) for v in kept])
    expected = {n: 0.7 * a + 0.3 * b for n, a, b in zip(["kitten", "dog", "car"], p_img, p_txt)}
    ranked = sorted(expected, key=expected.get, reverse=True)
    assert result.names == ranked
    np.testing.assert_allclose(result.scores, [expected[n] for n in ranked], rtol=1e-5)


def test_caption_search_by_hand(tmp_path):
    table = {"two red stars": unit(0), "a red star on sand": unit(20), "blue ring": unit(90),
             "red": unit(30), "star": unit(-10)}  # fmt: skip
    backbone = TableBackbone(table)
    db = table_database(tmp_path / "db", backbone, list(table)[:3], "captions")
    search = CasedSearch(backbone, db, k=2, alpha=0.6, pos_filter=False)
    result = search.search(embedding=torch.tensor(unit(5)))
    assert result.retrieved == ["two red stars", "a red star on sand"]  # cos 20 deg < 0.94
    # candidates: 'red' and 'star' (twice each); the texts' mean points at 10 degrees
    p_img = softmax([10 * math.cos(math.radians(25)), 10 * math.cos(math.radians(15))])
    p_txt = [0.5, 0.5]
    expected = [0.6 * a + 0.4 * b for a, b in zip(p_img, p_txt)]
    assert result.names == ["star", "red"]
    np.testing.assert_allclose(result.scores, [expected[1], expected[0]], rtol=1e-5)
    assert result.best == "star" and result.top(1) == [("star", pytest.approx(expected[1]))]
    assert result.pos_filter == "none" and result.to_dict()["pos_filter"] == "none"
    # the default filter, the WordNet lexicon, keeps the noun / adjective candidates
    default = CasedSearch(backbone, db, k=2, alpha=0.6)
    found = default.search(embedding=torch.tensor(unit(5)))
    assert found.pos_filter == "wordnet" and set(found.names) == {"red", "star"}


def test_registered_and_buildable(tmp_path):
    backbone = TableBackbone({"cat": unit(0), "dog": unit(50)})
    db = table_database(tmp_path / "db", backbone, ["cat", "dog"], "concepts")
    assert VOCAB_SOURCES.get("CasedSearch") is CasedSearch
    search = VOCAB_SOURCES.build({"type": "CasedSearch", "database": str(db), "k": 2},
                                 backbone=backbone)  # fmt: skip
    assert search.search(embedding=torch.tensor(unit(45))).best == "dog"
    with pytest.raises(ConfigError, match="alpha"):
        CasedSearch(backbone, db, alpha=1.5)


# ----------------------------------------------------------------------------- tiny CLIP
CONCEPTS = ["cat", "dog", "red car", "tree", "boat", "lamp", "wooden chair", "river", "cloud"]


@pytest.fixture(scope="module")
def backbone(tiny_model_names, one_torch_thread):
    model = ClipBackbone(tiny_model_names["vit"], templates="photo")
    return randomize_(model, seed=3)


@pytest.fixture(scope="module")
def concept_db(tmp_path_factory, backbone):
    folder = tmp_path_factory.mktemp("concepts")
    (folder / "names.txt").write_text("\n".join(CONCEPTS))
    return build_database(folder / "names.txt", backbone, folder / "db", kind="concepts",
                          progress=False)  # fmt: skip


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, size=(48, 40, 3), dtype=np.uint8)


def test_tiny_clip_names_come_from_the_database(backbone, concept_db, image):
    # the random text tower embeds all names alike: without de-duplication every hit stays
    search = CasedSearch(backbone, concept_db, k=5, dedup_threshold=1.5)
    mask = np.zeros((48, 40), bool)
    mask[10:30, 5:25] = True
    for result in (search.search(image), search.search(image, box=[4, 4, 30, 20]),
                   search.search(image, mask=mask)):  # fmt: skip
        assert len(result.names) == 5 and set(result.names) <= set(CONCEPTS)
        assert len(result.retrieved) == 5
        assert abs(float(result.scores.sum()) - 1) < 1e-5
        assert list(result.scores) == sorted(result.scores, reverse=True)
    assert search.logit_scale == pytest.approx(float(backbone.model.logit_scale.exp()))
    deduplicated = CasedSearch(backbone, concept_db, k=5).search(image)
    assert 1 <= len(deduplicated.retrieved) < 5 and set(deduplicated.names) <= set(CONCEPTS)


def test_logit_scale_is_the_models(tiny_model_names, concept_db, one_torch_thread):
    model = randomize_(ClipBackbone(tiny_model_names["vit"], templates="photo"), seed=3)
    with torch.no_grad():
        model.model.logit_scale.fill_(math.log(50.0))
    assert CasedSearch(model, concept_db).logit_scale == pytest.approx(50.0)
    assert CasedSearch(model, concept_db, logit_scale=7.0).logit_scale == 7.0


def test_region_embeddings_crop_as_clip_does(backbone, concept_db, image):
    search = CasedSearch(backbone, concept_db)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    crop = clip_preprocess(tensor[..., 4:20, 4:30], backbone.image_size)
    expected = backbone.encode_image(backbone.normalize(crop))
    got = search.embed_regions(image, boxes=[[4, 4, 30, 20]])
    torch.testing.assert_close(got, expected)
    mask = np.zeros((48, 40), bool)
    mask[4:20, 4:30] = True
    mask[4, 4] = False  # one pixel outside the mask gets the mean colour
    filled = tensor[..., 4:20, 4:30].clone()
    filled[..., 0, 0] = backbone.mean.view(1, 3)
    expected = backbone.encode_image(backbone.normalize(clip_preprocess(filled, 32)))
    torch.testing.assert_close(search.embed_regions(image, masks=mask[None]), expected)
    whole = search.embed_regions(image)
    assert whole.shape == (1, 32)
    with pytest.raises(ConfigError, match="covers no pixel"):
        search.embed_regions(image, boxes=[[50, 50, 60, 60]])
    with pytest.raises(ConfigError, match="empty"):
        search.embed_regions(image, masks=np.zeros((1, 48, 40), bool))


def test_name_regions_returns_one_ranking_per_embedding(backbone, concept_db, image):
    search = CasedSearch(backbone, concept_db, k=3)
    embeddings = search.embed_regions(image, boxes=[[0, 0, 20, 20], [10, 10, 40, 48]])
    results = search.name_regions(embeddings)
    assert len(results) == 2
    assert results[0].names == search.search(image, box=[0, 0, 20, 20]).names
    assert all(set(r.names) <= set(CONCEPTS) for r in results)


def test_embedded_database_names_held_out_objects(one_torch_thread):
    """The shapes-tiny preset names objects of freshly generated scenes (bounds well below the
    measured 6 / 22 exact names and 20 / 22 right colours)."""
    import ovseg
    from ovseg.data.synthetic import SyntheticSceneDataset

    seg = ovseg.create_pipeline("shapes-tiny")
    search = CasedSearch(seg.backbone, "shapes-tiny", pretrained="shapes", max_ngram=2)
    data = SyntheticSceneDataset(num=12, seed=2024, split="val")
    exact = colour = total = 0
    for index in range(len(data)):
        scene = data.scene(index)
        named = search.name_regions(search.embed_regions(scene.image, boxes=scene.boxes))
        for obj, result in zip(scene.instances, named):
            exact += result.best == obj.name
            colour += result.best.split()[0] == obj.colour
            total += 1
    assert total >= 15
    assert exact / total > 0.1 and colour / total > 0.6


def test_texts_are_encoded_as_the_reference_prepares_them(backbone, concept_db):
    from ovseg.cased.database import encode_texts

    search = CasedSearch(backbone, concept_db)
    got = search.text_embeddings(["wooden_chair", "red car"]).numpy()
    np.testing.assert_allclose(got, encode_texts(backbone, ["wooden chair", "red car"]), atol=1e-6)
