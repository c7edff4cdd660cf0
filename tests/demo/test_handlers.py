"""The demo's task handlers, called directly (no gradio, no browser)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from ovseg.demo.handlers import (
    TABLE_HEADERS,
    EncodedImages,
    FeatureCache,
    PipelineProvider,
    SemanticHandler,
    SessionFiles,
    class_file_text,
    describe_failure,
    image_digest,
    is_out_of_memory,
    legend_entries,
    legend_html,
    load_examples,
    render_overlay,
)
from ovseg.errors import ImageReadError, ImageTooLargeError, VocabularyError
from ovseg.io import read_image, read_label_png
from ovseg.structures import UNLABELLED, OVSegResult
from ovseg.visualize import class_colours

VOCAB = "red star, blue ring|circle ring, water, wall"


class CountingEncoder:
    """Wraps ``backbone.encode_dense`` and counts the images it encodes."""

    def __init__(self, backbone):
        self.backbone, self.original, self.images = backbone, backbone.encode_dense, 0

    def __call__(self, batch):
        self.images += batch.shape[0]
        return self.original(batch)

    def __enter__(self):
        self.backbone.encode_dense = self
        return self

    def __exit__(self, *exc):
        self.backbone.encode_dense = self.original


@pytest.fixture
def scene(examples_dir):
    return read_image(examples_dir / "shapes_scene.jpg")


def test_semantic_outputs_have_the_input_size_and_one_row_per_class(shapes_tiny, scene, tmp_path):
    out = SemanticHandler(shapes_tiny).run(scene, VOCAB, opacity=0.5, out_dir=tmp_path)

    assert out.overlay.shape == scene.shape and out.overlay.dtype == np.uint8
    assert [row[0] for row in out.table] == ["red star", "blue ring", "water", "wall"]
    assert all(len(row) == len(TABLE_HEADERS) for row in out.table)
    assert sum(row[1] for row in out.table) + (out.result.sem_seg == UNLABELLED).sum() == 128 * 128

    json_path, labels_path, overlay_path = out.files
    assert json_path.parent == labels_path.parent == tmp_path
    summary = json.loads(json_path.read_text())
    assert [c["name"] for c in summary["classes"]] == [row[0] for row in out.table]
    assert [c["area"] for c in summary["classes"]] == [row[1] for row in out.table]
    assert summary["meta"]["vocabulary"] == [
        "red star",
        "blue ring",
        "circle ring",
        "water",
        "wall",
    ]
    labels = read_label_png(labels_path)
    assert labels.shape == scene.shape[:2]
    np.testing.assert_array_equal(labels, out.result.sem_seg)
    # the picture is enlarged 4x (128 px input, pictures >= 512 px); the legend panel widens it
    assert read_image(overlay_path).shape[0] == 4 * scene.shape[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_semantic_result_matches_the_pipeline_called_directly(shapes_tiny, scene, tmp_path):
    out = SemanticHandler(shapes_tiny).run(scene, VOCAB, opacity=0.5, out_dir=tmp_path)
    direct = shapes_tiny(scene, VOCAB)
    np.testing.assert_array_equal(out.result.sem_seg, direct.sem_seg)
    np.testing.assert_allclose(out.result.probs, direct.probs, atol=1e-6)


def test_a_new_vocabulary_reuses_the_cached_image_features(shapes_tiny, scene, tmp_path):
    handler = SemanticHandler(shapes_tiny)
    with CountingEncoder(shapes_tiny.backbone) as encoder:
        first = handler.run(scene, VOCAB, out_dir=tmp_path)
        encoded_once = encoder.images
        second = handler.run(scene.copy(), "red diamond, blue square, water", out_dir=tmp_path)
        third = handler.run(scene, "sand, grass", out_dir=tmp_path)
        assert encoded_once > 0 and encoder.images == encoded_once
        other = scene[::-1].copy()
        handler.run(other, "sand", out_dir=tmp_path)
        assert encoder.images == 2 * encoded_once
    assert (first.cached, second.cached, third.cached) == (False, True, True)
    assert second.result.class_names == ["red diamond", "blue square", "water"]
    np.testing.assert_array_equal(
        second.result.sem_seg, shapes_tiny(scene, "red diamond, blue square, water").sem_seg
    )


def test_feature_cache_drops_the_least_recently_used_image():
    cache, calls = FeatureCache(max_items=2), []

    def compute(key):
        return lambda: calls.append(key) or key.upper()

    assert cache.get_or_compute("a", compute("a")) == "A"
    cache.get_or_compute("b", compute("b"))
    cache.get_or_compute("a", compute("a"))  # a is now the most recent
    cache.get_or_compute("c", compute("c"))  # evicts b
    assert "a" in cache and "c" in cache and "b" not in cache
    assert calls == ["a", "b", "c"] and (cache.hits, cache.misses) == (1, 3)
    cache.clear()
    assert len(cache) == 0


def test_image_digest_depends_on_pixels_and_shape():
    image = np.zeros((4, 6, 3), np.uint8)
    assert image_digest(image) == image_digest(image.copy())
    changed = image.copy()
    changed[0, 0, 0] = 1
    assert image_digest(changed) != image_digest(image)
    assert image_digest(image.reshape(6, 4, 3)) != image_digest(image)


def test_encoded_images_encode_each_image_once(shapes_tiny, scene):
    images = EncodedImages(shapes_tiny)
    with CountingEncoder(shapes_tiny.backbone) as encoder:
        encoded, reused = images.get(scene, image_digest(scene))
        first = shapes_tiny.predict(encoded, VOCAB)
        per_image = encoder.images
        again, reused_again = images.get(scene, image_digest(scene))
        shapes_tiny.predict(again, "water, wall")
        assert encoder.images == per_image and again is encoded
        assert (reused, reused_again) == (False, True)
        flipped = scene[:, ::-1].copy()
        shapes_tiny.predict(images.get(flipped, image_digest(flipped))[0], VOCAB)
        assert encoder.images == 2 * per_image
    np.testing.assert_array_equal(first.sem_seg, shapes_tiny(scene, VOCAB).sem_seg)


def test_encoded_images_keep_nothing_of_a_failed_encoding():
    class Flaky:
        def __init__(self):
            self.calls = 0

        def encode(self, image):
            self.calls += 1
            if self.calls == 1:
                raise MemoryError
            return image

    images, image = EncodedImages(Flaky()), np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(MemoryError):
        images.get(image, "k")
    assert images.get(image, "k") == (image, False) and images.pipeline.calls == 2


def test_opacity_blends_between_the_image_and_the_palette(scene):
    labels = np.full(scene.shape[:2], UNLABELLED, np.int64)
    labels[:10] = 1
    names = ["a", "b"]
    np.testing.assert_array_equal(render_overlay(scene, labels, names, 0.0), scene)
    full = render_overlay(scene, labels, names, 1.0)
    assert (full[:10] == class_colours(["b"])[0]).all()  # only b is drawn
    np.testing.assert_array_equal(full[10:], scene[10:])
    assert render_overlay(scene, labels, names, 7.0).shape == scene.shape  # clipped to 1


def test_legend_lists_present_classes_largest_first_with_escaped_names():
    labels = np.array([[2, 2, 2], [0, 0, UNLABELLED]])
    result = OVSegResult(sem_seg=labels, class_names=["<b>x</b>", "absent", "wall"])
    entries = legend_entries(result)
    assert [e.name for e in entries] == ["wall", "<b>x</b>"]
    colours = class_colours(["wall", "<b>x</b>"])
    assert entries[0].colour == "#{:02x}{:02x}{:02x}".format(*colours[0])
    assert entries[0].area_fraction == pytest.approx(0.5)
    rendered = legend_html(entries)
    assert "&lt;b&gt;x&lt;/b&gt;" in rendered and "<b>x</b>" not in rendered
    assert rendered.count('class="ovseg-legend-item"') == 2
    assert "No pixel" in legend_html([])


def test_bad_requests_raise_typed_errors(shapes_tiny, scene, tmp_path):
    handler = SemanticHandler(shapes_tiny)
    with pytest.raises(VocabularyError, match="empty"):
        handler.run(scene, "  ", out_dir=tmp_path)
    with pytest.raises(VocabularyError, match="more than once"):
        handler.run(scene, "water, Water", out_dir=tmp_path)
    with pytest.raises(ImageReadError, match="upload an image"):
        handler.run(None, VOCAB, out_dir=tmp_path)
    with pytest.raises(ImageReadError):
        handler.run(b"not an image", VOCAB, out_dir=tmp_path)


def test_images_over_the_pixel_cap_are_refused_before_encoding(shapes_tiny, scene, tmp_path):
    handler = SemanticHandler(shapes_tiny)
    previous = shapes_tiny.inference["max_pixels"]
    shapes_tiny.inference["max_pixels"] = 100 * 100
    try:
        with CountingEncoder(shapes_tiny.backbone) as encoder:
            with pytest.raises(ImageTooLargeError):
                handler.run(scene, VOCAB, out_dir=tmp_path)
        assert encoder.images == 0
    finally:
        shapes_tiny.inference["max_pixels"] = previous


def test_failures_become_user_messages(caplog):
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: 9 GB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert "Out of memory" in describe_failure(MemoryError())
    assert describe_failure(VocabularyError("Type a class.")) == "Type a class."
    message = describe_failure(KeyError("/secret/path"))
    assert "KeyError" in message and "/secret/path" not in message
    assert "/secret/path" in caplog.text  # logged for the operator


def test_release_memory_empties_the_feature_cache(shapes_tiny, scene, tmp_path):
    handler = SemanticHandler(shapes_tiny)
    handler.run(scene, VOCAB, out_dir=tmp_path)
    assert len(handler.cache) == 1
    handler.release_memory()
    assert len(handler.cache) == 0


def test_session_folders_stay_inside_the_root(tmp_path):
    files = SessionFiles(tmp_path / "sessions")
    good = files.directory("abc_DEF-123")
    assert good == tmp_path / "sessions" / "abc_DEF-123" and good.is_dir()
    for hostile in ("../../etc", "/tmp", "a/b", "..", "x" * 200):
        folder = files.directory(hostile)
        assert folder.parent == files.root and folder.is_dir()
    assert files.directory(None).name == "anonymous"
    (good / "f.json").write_text("{}")
    files.remove("abc_DEF-123")
    assert not good.exists()
    files.close()
    assert not files.root.exists()


def test_examples_come_with_their_vocabularies(examples_dir, tmp_path):
    examples = load_examples(examples_dir)
    names = [e.image.name for e in examples]
    assert "shapes_scene.jpg" in names and names == sorted(names)
    shapes = examples[names.index("shapes_scene.jpg")]
    assert shapes.vocabulary == "red star, red diamond, blue square, blue ring, water, wall"
    (tmp_path / "a.png").write_bytes(b"")  # no class file: not an example
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "b.txt").write_text("# comment\nperson, man\n\ncat\nsky: sky, clouds\n")
    assert [e.image.name for e in load_examples(tmp_path)] == ["b.jpg"]
    assert class_file_text(tmp_path / "b.txt") == "person|man, cat, sky|clouds"
    assert load_examples(None) == []


def test_pipeline_provider_builds_each_task_once():
    built, lock = [], threading.Lock()

    def factory(source, task, overrides, device):
        with lock:
            built.append((source, task, tuple(overrides), device))
        return object()

    provider = PipelineProvider("cfg.yaml", overrides=["a=1"], device="cpu", factory=factory)
    threads = [threading.Thread(target=provider.get, args=("semantic",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert provider.get("semantic") is provider.get("semantic")
    assert built == [("cfg.yaml", "semantic", ("a=1",), "cpu")]
    assert provider.loaded_tasks == ["semantic"]


def test_default_provider_builds_the_served_preset(one_torch_thread):
    from ovseg.pipelines.semantic import SemanticSegmenter

    pipeline = PipelineProvider("shapes-tiny", overrides=["pipeline.logit_scale=7"]).get("semantic")
    assert isinstance(pipeline, SemanticSegmenter) and pipeline.logit_scale == 7.0
