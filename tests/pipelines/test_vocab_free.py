"""Vocabulary-free segmentation on a tiny random CLIP: names come from the database."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ovseg
from ovseg.api import build_vocab_free_pipeline
from ovseg.cased.build import build_database
from ovseg.cased.search import CasedSearch
from ovseg.errors import ConfigError, DatabaseMismatchError
from ovseg.pipelines.vocab_free import (
    VocabFreeSegmenter,
    grid_boxes,
    grid_cells,
)
from ovseg.registry import PIPELINES
from tests.conftest import randomize_

# the tiny random text tower embeds every name almost alike: de-duplication (tested in
# tests/vocab) is switched off so that the searches keep several candidates
NO_DEDUP = 1.5
CONCEPTS = ["cat", "dog", "red car", "tree", "boat", "lamp", "wooden chair", "river", "sky"]


def tiny_config(model_name, database=None):
    cfg = {
        "pipeline": {
            "type": "SemanticSegmenter",
            "backbone": {
                "type": "ClipBackbone",
                "model_name": model_name,
                "dense_mode": "sclip",
                "templates": "photo",
            },  # fmt: skip
            "logit_scale": 40.0,
            "inference": {"mode": "slide", "crop_size": 32, "stride": 16},
        }
    }
    if database is not None:
        cfg["database"] = database
    return cfg


@pytest.fixture(scope="module")
def seg(tiny_model_names, one_torch_thread):
    torch.manual_seed(0)
    pipeline = ovseg.create_pipeline(tiny_config(tiny_model_names["vit"]), vocabulary=["x"])
    randomize_(pipeline.backbone.model, seed=5)
    return pipeline


@pytest.fixture(scope="module")
def db(tmp_path_factory, seg):
    folder = tmp_path_factory.mktemp("vf")
    (folder / "names.txt").write_text("\n".join(CONCEPTS))
    return build_database(folder / "names.txt", seg.backbone, folder / "db", kind="concepts",
                          progress=False)  # fmt: skip


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)


class BoxCounter:
    def __init__(self, search):
        self.search, self.counts = search, []
        self.original = search.embed_regions

    def __call__(self, image, boxes=None, masks=None):
        self.counts.append(0 if boxes is None else len(boxes))
        return self.original(image, boxes=boxes, masks=masks)


def test_grid_crops_overlap_by_half():
    cells = grid_cells(2, 4)
    assert len(cells) == 9 and cells[0] == (0, 2, 0, 2) and cells[1] == (0, 2, 1, 3)
    assert [len(grid_cells(n, 16)) for n in (2, 4, 8)] == [9, 49, 225]
    coverage = np.zeros((16, 16), int)
    for r0, r1, c0, c1 in grid_cells(8, 16):
        coverage[r0:r1, c0:c1] += 1
    assert coverage.min() == 1 and coverage.max() == 4
    boxes = grid_boxes(40, 56, 2)
    np.testing.assert_array_equal(boxes[0], [0, 0, 28, 20])
    np.testing.assert_array_equal(boxes[-1], [28, 20, 56, 40])
    with pytest.raises(ConfigError):
        grid_cells(3, 16)


def test_fast_route_segments_with_names_from_the_database(seg, db, image, monkeypatch):
    search = CasedSearch(seg.backbone, db, k=5, dedup_threshold=NO_DEDUP)
    counter = BoxCounter(search)
    monkeypatch.setattr(search, "embed_regions", counter)
    pipeline = VocabFreeSegmenter(seg, search, min_score=0.05)
    result = pipeline(image)
    assert counter.counts == [1 + 9]  # the whole image and the 3 x 3 half-overlapping crops
    assert result.class_names and set(result.class_names) <= set(CONCEPTS)
    assert result.sem_seg.shape == (40, 56) and result.probs.shape[0] == len(result.class_names)
    found = result.meta["vocab_free"]
    assert [n["name"] for n in found["names"]] == result.class_names and found["mode"] == "fast"
    assert found["pos_filter"] == search.pos_filter
    scores = [n["score"] for n in found["names"]]
    assert scores == sorted(scores, reverse=True)
    direct = seg(image, result.class_names)  # the same as a user giving these names
    # the pipeline runs set_image + predict on the names it found, as this call does: exact
    np.testing.assert_array_equal(direct.sem_seg, result.sem_seg)


def test_fast_route_thresholds_and_caps(seg, db, image):
    search = CasedSearch(seg.backbone, db, k=9, dedup_threshold=NO_DEDUP)
    strict = VocabFreeSegmenter(seg, search, min_score=1.01)  # nothing passes: best of the image
    assert strict.discover(image) == search.search(image).top(1)
    capped = VocabFreeSegmenter(seg, search, min_score=0.0, names_per_view=9, max_names=2)
    assert len(capped.discover(image)) == 2


def test_dense_route_accumulates_crop_scores(seg, db, image, monkeypatch):
    search = CasedSearch(seg.backbone, db, k=5, dedup_threshold=NO_DEDUP)
    counter = BoxCounter(search)
    monkeypatch.setattr(search, "embed_regions", counter)
    dense = VocabFreeSegmenter(seg, search, mode="dense", min_score=0.05)
    result = dense(image)
    assert counter.counts == [9 + 49 + 225]
    assert set(result.class_names) <= set(CONCEPTS)
    assert result.probs.shape == (len(result.class_names), 40, 56)
    np.testing.assert_allclose(result.probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(result.sem_seg, result.probs.argmax(0))
    assert result.meta["vocab_free"]["mode"] == "dense"


def test_dense_route_with_one_crop_by_hand(seg, db, image):
    search = CasedSearch(seg.backbone, db, k=5, dedup_threshold=NO_DEDUP)
    dense = VocabFreeSegmenter(seg, search, mode="dense", grids=(1,), min_score=0.0,
                               names_per_view=4)  # fmt: skip
    result = dense(image)
    whole = search.search(image)  # one crop = the whole image: a constant prior per name
    prior = torch.tensor([dict(zip(whole.names, whole.scores))[n] for n in result.class_names])
    prior = prior / prior.sum()
    features = seg.set_image(image)
    cos = seg.query_scores(features, ovseg.Vocabulary.create(result.class_names))
    expected = torch.softmax(seg.logit_scale * cos, dim=0) * prior.view(-1, 1, 1)
    expected = expected / expected.sum(0, keepdim=True)
    np.testing.assert_allclose(result.probs, expected.numpy(), atol=1e-5)
    assert result.class_names == whole.names[:4]
    crops_only = VocabFreeSegmenter(seg, search, mode="dense", grids=(1,), min_score=0.0,
                                    names_per_view=4, combine="crops")  # fmt: skip
    assert (crops_only(image).sem_seg == 0).all()  # the best-scored name everywhere


def test_given_vocabulary_skips_the_search(seg, db, image):
    pipeline = VocabFreeSegmenter(seg, CasedSearch(seg.backbone, db, dedup_threshold=NO_DEDUP))
    given = pipeline(image, ["cat", "sky"])
    assert given.class_names == ["cat", "sky"]
    np.testing.assert_array_equal(given.sem_seg, seg(image, ["cat", "sky"]).sem_seg)  # same call
    with pytest.raises(ConfigError, match="set_image"):
        VocabFreeSegmenter(seg, CasedSearch(seg.backbone, db, dedup_threshold=NO_DEDUP)).predict()
    with pytest.raises(ConfigError, match="mode"):
        VocabFreeSegmenter(
            seg, CasedSearch(seg.backbone, db, dedup_threshold=NO_DEDUP), mode="slow"
        )


def test_name_regions(seg, db, image):
    pipeline = VocabFreeSegmenter(seg, CasedSearch(seg.backbone, db, k=3, dedup_threshold=NO_DEDUP))
    embeddings = pipeline.search.embed_regions(image, boxes=[[0, 0, 20, 20], [5, 5, 50, 30]])
    named = pipeline.name_regions(embeddings)
    assert len(named) == 2 and all(set(r.names) <= set(CONCEPTS) for r in named)


def test_build_from_preset_config(tiny_model_names, db, image, one_torch_thread):
    cfg = tiny_config(tiny_model_names["vit"], database={"path": str(db), "k": 4})
    cfg["vocab_free"] = {"min_score": 0.0, "max_names": 3}
    torch.manual_seed(0)
    with pytest.raises(DatabaseMismatchError, match="other ovseg-test-vit weights"):
        build_vocab_free_pipeline(cfg)  # not the randomised weights the database was built with
    with pytest.raises(ConfigError, match="--db DIR"):
        build_vocab_free_pipeline(tiny_config(tiny_model_names["vit"]))


def test_build_with_db_argument_and_registry(seg, tiny_model_names, db, image, monkeypatch):
    # the preset's backbone is randomised the same way as the one that built the database
    real = ovseg.api.create_pipeline

    def seeded(*args, **kwargs):
        pipeline = real(*args, **kwargs)
        randomize_(pipeline.backbone.model, seed=5)
        return pipeline

    monkeypatch.setattr(ovseg.api, "create_pipeline", seeded)
    pipeline = build_vocab_free_pipeline(
        tiny_config(tiny_model_names["vit"], database={"path": "elsewhere", "k": 4, "dedup_threshold": NO_DEDUP}), db=str(db),
        min_score=0.0, max_names=3,
    )  # fmt: skip
    assert pipeline.search.k == 4 and pipeline.max_names == 3
    assert pipeline.config["database"]["path"] == str(db)
    result = pipeline(image)
    assert 1 <= len(result.class_names) <= 3 and set(result.class_names) <= set(CONCEPTS)


def test_built_from_a_pipeline_config(tiny_model_names, tmp_path, image, one_torch_thread):
    from ovseg.models.backbones.clip import ClipBackbone

    segmenter_cfg = tiny_config(tiny_model_names["vit"])["pipeline"]
    backbone_cfg = {k: v for k, v in segmenter_cfg["backbone"].items() if k != "type"}
    (tmp_path / "names.txt").write_text("\n".join(CONCEPTS))
    torch.manual_seed(7)
    backbone = ClipBackbone(**backbone_cfg)
    db = build_database(tmp_path / "names.txt", backbone, tmp_path / "db", kind="concepts",
                        progress=False)  # fmt: skip
    assert PIPELINES.get("VocabFreeSegmenter") is VocabFreeSegmenter
    torch.manual_seed(7)  # the same random weights as the database's
    config = {"pipeline": {"type": "VocabFreeSegmenter", "segmenter": segmenter_cfg,
                           "search": {"database": str(db), "k": 3, "dedup_threshold": NO_DEDUP}, "min_score": 0.0}}  # fmt: skip
    pipeline = ovseg.create_pipeline(config)
    assert isinstance(pipeline, VocabFreeSegmenter) and pipeline.search.k == 3
    assert set(pipeline(image).class_names) <= set(CONCEPTS)
