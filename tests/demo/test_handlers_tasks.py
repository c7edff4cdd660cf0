"""The referring, instance, click, vocabulary-free and reasoning handlers of the demo on tiny random
models (a tiny CLIP and a tiny SAM loaded from files, a tiny text database, a tiny scripted
READ folder): outputs, tables,
files, and which encoders run again for another prompt on the same image."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import numpy as np
import pytest

import ovseg
from ovseg.demo.handlers import (
    FOUND_NAMES_HEADERS,
    INSTANCE_HEADERS,
    NO_MASK_NOTE,
    REASONING_HEADERS,
    REFERRING_HEADERS,
    TABLE_HEADERS,
    ClickHandler,
    EncodedImages,
    InstanceHandler,
    PackedInstances,
    PipelineProvider,
    ReasoningHandler,
    ReferringHandler,
    VocabFreeHandler,
    add_click,
    click_prompts,
    filter_instances,
    format_box,
    image_digest,
    parse_clicks,
)
from ovseg.errors import ConfigError, ImageReadError, PromptError, VocabularyError
from ovseg.io import read_image, read_label_png
from ovseg.structures import PointPrompts
from ovseg.visualize import POINT_COLOURS
from tests.demo.conftest import DATABASE_NAMES

VOCAB = "red star, blue ring|circle ring, water, wall"


class CallCounter:
    """Counts the calls of ``owner.<name>`` while active (the calls still happen)."""

    def __init__(self, owner, name: str):
        self.owner, self.name, self.calls = owner, name, 0
        self.original = getattr(owner, name)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.original(*args, **kwargs)

    def __enter__(self):
        setattr(self.owner, self.name, self)
        return self

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.original)


class ForwardCounter:
    """Counts the forward passes of a torch module (a hook; the module is left in place)."""

    def __init__(self, module):
        self.calls = 0
        self._handle = module.register_forward_hook(self._count)

    def _count(self, *_):
        self.calls += 1

    def remove(self):
        self._handle.remove()


@contextlib.contextmanager
def image_encoders(pipeline) -> Iterator[dict]:
    """Counters of the image-side work of a SAM pipeline: SAM's image encoder (``sam``), CLIP's
    dense encoder (``clip``) and SAM's automatic proposals (``proposals``)."""
    sam = ForwardCounter(pipeline.decoder.model.image_encoder)
    try:
        with (
            CallCounter(pipeline.backbone, "encode_dense") as clip,
            CallCounter(pipeline.decoder, "generate") as proposals,
        ):
            yield {"sam": sam, "clip": clip, "proposals": proposals}
    finally:
        sam.remove()


@pytest.fixture(scope="module")
def scene(examples_dir):
    return read_image(examples_dir / "shapes_scene.jpg")


@pytest.fixture(scope="module")
def other_scene(examples_dir):
    return read_image(examples_dir / "synthetic_seed7_val0000.jpg")


@pytest.fixture(scope="module")
def referring(tiny_provider):
    return tiny_provider.get("referring")


@pytest.fixture(scope="module")
def instance(tiny_provider):
    return tiny_provider.get("instance")


@pytest.fixture(scope="module")
def vocab_free(tiny_provider):
    return tiny_provider.get("vocab_free")


# ----------------------------------------------------------------------------- referring
def test_referring_outputs_have_the_input_size_and_one_row(referring, scene, tmp_path):
    out = ReferringHandler(referring).run(scene, "  red star ", out_dir=tmp_path)
    result = out.result

    assert out.mask_overlay.shape == out.heat_map.shape == scene.shape
    assert out.mask_overlay.dtype == out.heat_map.dtype == np.uint8
    assert result.phrase == "red star" and result.mask.shape == scene.shape[:2]
    (row,) = out.table
    assert len(row) == len(REFERRING_HEADERS)
    summary = result.to_dict()
    assert row == ["red star", round(result.score, 4), int(result.mask.sum()),
                   format_box(summary["box_xyxy"])]  # fmt: skip

    json_path, mask_path, similarity_path, overlay_path = out.files
    assert {p.parent for p in out.files} == {tmp_path}
    saved = json.loads(json_path.read_text())
    assert saved["phrase"] == "red star" and saved["area"] == row[2]
    assert saved["points"] == result.points.to_dict()
    np.testing.assert_array_equal(read_image(mask_path, max_pixels=None)[..., 0] > 0, result.mask)
    assert read_image(similarity_path).shape[:2] == scene.shape[:2]
    # mask | heat map with a 4 px gap, all enlarged 4x (128 px input, pictures >= 512 px)
    assert read_image(overlay_path).shape[1] == 4 * (2 * scene.shape[1] + 4)


def test_referring_shows_points_in_their_colours_and_the_heat_map(referring, scene, tmp_path):
    out = ReferringHandler(referring).run(scene, "water", opacity=0.0, out_dir=tmp_path)
    points = out.result.points
    assert len(points) > 0
    for (x, y), label in zip(points.coords, points.labels):
        colour = POINT_COLOURS[int(label)]
        assert tuple(out.mask_overlay[int(y), int(x)]) == colour  # the dot's centre pixel
        assert tuple(out.heat_map[int(y), int(x)]) == colour
    far = np.ones(scene.shape[:2], bool)
    for x, y in points.coords:
        far[max(0, int(y) - 4) : int(y) + 5, max(0, int(x) - 4) : int(x) + 5] = False
    np.testing.assert_array_equal(out.mask_overlay[far], scene[far])  # opacity 0: mask unseen
    assert not np.array_equal(out.heat_map[far], scene[far])


def test_referring_matches_the_pipeline_called_directly(
    referring, tiny_task_config, scene, tmp_path
):
    out = ReferringHandler(referring).run(scene, "blue ring", out_dir=tmp_path)
    direct = ovseg.create_pipeline(tiny_task_config, task="referring")(scene, "blue ring")
    np.testing.assert_array_equal(out.result.mask, direct.mask)
    np.testing.assert_allclose(out.result.similarity, direct.similarity, atol=1e-6)
    np.testing.assert_allclose(out.result.points.coords, direct.points.coords)
    assert out.result.score == pytest.approx(direct.score, abs=1e-6)


def test_a_new_phrase_on_the_same_image_reuses_both_embeddings(
    referring, scene, other_scene, tmp_path
):
    handler = ReferringHandler(referring)
    handler.images.release()  # whatever an earlier test left
    with image_encoders(referring) as calls:
        first = handler.run(scene, "red star", out_dir=tmp_path)
        assert (calls["sam"].calls, calls["clip"].calls) == (1, 1)
        second = handler.run(scene.copy(), "wall", out_dir=tmp_path)
        third = handler.run(scene, "sand", out_dir=tmp_path)
        assert (calls["sam"].calls, calls["clip"].calls) == (1, 1)
        handler.run(other_scene, "sand", out_dir=tmp_path)
        assert (calls["sam"].calls, calls["clip"].calls) == (2, 2)
    assert (first.cached, second.cached, third.cached) == (False, True, True)
    assert second.result.phrase == "wall"


def test_referring_errors_are_typed_and_the_next_request_works(referring, scene, tmp_path):
    handler = ReferringHandler(referring)
    with pytest.raises(PromptError, match="phrase is empty"):
        handler.run(scene, "   ", out_dir=tmp_path)
    with pytest.raises(PromptError, match="shorten it"):
        handler.run(scene, "x" * 301, out_dir=tmp_path)
    with pytest.raises(ImageReadError, match="upload an image"):
        handler.run(None, "red star", out_dir=tmp_path)
    with pytest.raises(ImageReadError):
        handler.run(b"not an image", "red star", out_dir=tmp_path)
    assert handler.run(scene, "red star", out_dir=tmp_path).result.mask.shape == (128, 128)


def test_a_pipeline_without_the_task_methods_is_refused(tiny_provider):
    semantic = tiny_provider.get("semantic")
    for handler in (ReferringHandler, InstanceHandler, ClickHandler, VocabFreeHandler):
        with pytest.raises(ConfigError, match="SemanticSegmenter has no"):
            handler(semantic)


# ----------------------------------------------------------------------------- instances
def test_instance_outputs_tables_and_files(instance, scene, tmp_path):
    out = InstanceHandler(instance).run(scene, VOCAB, score_threshold=0.0, out_dir=tmp_path)
    shown = out.shown
    assert len(shown) >= 2 and out.score_threshold == 0.0
    assert out.overlay.shape == scene.shape and out.overlay.dtype == np.uint8
    assert shown.class_names == ["red star", "blue ring", "water", "wall"]
    assert [len(row) for row in out.table] == [len(INSTANCE_HEADERS)] * len(shown)
    assert [row[0] for row in out.table] == [shown.class_names[i] for i in shown.labels]
    scores = [row[1] for row in out.table]
    assert scores == sorted(scores, reverse=True)
    assert [row[3] for row in out.table] == shown.masks.reshape(len(shown), -1).sum(1).tolist()
    assert out.table[0][2] == format_box(shown.boxes[0])

    json_path, ids_path, overlay_path = out.files
    saved = json.loads(json_path.read_text())
    assert [item["area"] for item in saved["instances"]] == [row[3] for row in out.table]
    ids = read_label_png(ids_path)
    assert ids.shape == scene.shape[:2] and ids.max() <= len(shown)
    for k in np.unique(ids[ids > 0]):
        assert shown.masks[k - 1][ids == k].all()  # id k is instance k - 1
    assert read_image(overlay_path).shape == (512, 512, 3)  # the 128 px input enlarged 4x


def test_the_threshold_equals_the_pipelines_own_and_needs_no_model(
    instance, tiny_task_config, scene, tmp_path
):
    handler = InstanceHandler(instance)
    assert handler.default_threshold == 0.05
    everything = handler.run(scene, VOCAB, score_threshold=0.0, out_dir=tmp_path).instances
    assert len(np.unique(everything.scores)) >= 2
    threshold = float(np.median(everything.scores))
    assert instance.postprocess["score_threshold"] == 0.05  # restored after the run

    with image_encoders(instance) as calls, CallCounter(instance.decoder, "predict") as decode:
        again = InstanceHandler.render(scene, everything, threshold, out_dir=tmp_path, stem="t")
        assert calls["sam"].calls == calls["clip"].calls == calls["proposals"].calls == 0
        assert decode.calls == 0
    assert 0 < len(again.shown) < len(everything)
    assert (again.shown.scores >= threshold).all()

    direct = ovseg.create_pipeline(
        tiny_task_config, task="instance", overrides=[f"pipelines.instance.postprocess.score_threshold={threshold}"]
    )(scene, VOCAB)  # fmt: skip
    np.testing.assert_array_equal(again.shown.masks, direct.masks)
    np.testing.assert_array_equal(again.shown.labels, direct.labels)
    np.testing.assert_allclose(again.shown.scores, direct.scores, atol=1e-6)
    via_run = handler.run(scene, VOCAB, score_threshold=threshold, out_dir=tmp_path)
    assert via_run.table == again.table and via_run.cached


def test_the_slider_can_go_below_the_configured_threshold(instance, scene, tmp_path, monkeypatch):
    handler = InstanceHandler(instance)
    everything = handler.run(scene, VOCAB, score_threshold=0.0, out_dir=tmp_path).instances
    configured = float(np.median(everything.scores))
    monkeypatch.setitem(instance.postprocess, "score_threshold", configured)
    assert handler.default_threshold == configured

    lowered = handler.run(scene, VOCAB, score_threshold=0.0, out_dir=tmp_path)
    assert len(lowered.shown) == len(everything)  # computed at 0, not at the configured value
    by_default = handler.run(scene, VOCAB, out_dir=tmp_path)
    assert by_default.score_threshold == configured
    assert len(by_default.instances) == len(everything) > len(by_default.shown)
    assert instance.postprocess["score_threshold"] == configured  # restored after each run


def test_another_vocabulary_reuses_sam_proposals_and_clip_tokens(
    instance, scene, other_scene, tmp_path
):
    handler = InstanceHandler(instance)
    handler.run(other_scene, VOCAB, out_dir=tmp_path)  # whatever was set before
    with image_encoders(instance) as calls:
        first = handler.run(scene, VOCAB, out_dir=tmp_path)
        assert [calls[k].calls for k in ("sam", "clip", "proposals")] == [1, 1, 1]
        second = handler.run(scene, "water, sand", out_dir=tmp_path)
        assert [calls[k].calls for k in ("sam", "clip", "proposals")] == [1, 1, 1]
    assert (first.cached, second.cached) == (False, True)
    assert second.instances.class_names == ["water", "sand"]


def test_packed_instances_round_trip_and_filtering(instance, scene, tmp_path):
    found = InstanceHandler(instance).run(scene, VOCAB, score_threshold=0.0, out_dir=tmp_path)
    instances = found.instances
    packed = PackedInstances.pack(instances)
    assert packed.bits.nbytes * 8 >= instances.masks.size > (packed.bits.nbytes - 1) * 8
    back = packed.unpack()
    np.testing.assert_array_equal(back.masks, instances.masks)
    np.testing.assert_array_equal(back.scores, instances.scores)
    assert back.class_names == instances.class_names
    assert len(filter_instances(instances, 1.01)) == 0
    assert len(filter_instances(instances, 0.0)) == len(instances)


def test_instance_errors_are_typed(instance, scene, tmp_path):
    handler = InstanceHandler(instance)
    with pytest.raises(VocabularyError, match="empty"):
        handler.run(scene, " ", out_dir=tmp_path)
    with pytest.raises(ImageReadError):
        handler.run(None, VOCAB, out_dir=tmp_path)


# ----------------------------------------------------------------------------- clicks
def test_clicks_become_pixel_centre_prompts():
    points = click_prompts("[[30, 40, 1], [5, 0, 0]]", (128, 100))
    np.testing.assert_array_equal(points.coords, [[30.5, 40.5], [5.5, 0.5]])
    assert points.labels.tolist() == [1, 0]
    assert parse_clicks(None) == parse_clicks(" ") == []
    text = add_click("[]", 3, 4, "positive")
    text = add_click(text, 7.5, 9, "negative")
    assert json.loads(text) == [[3, 4, 1], [7.5, 9, 0]]
    for bad, message in [
        ("[[1, 2]]", r"\[x, y, label\]"),
        ("[[1, 2, 3]]", "label 1"),
        ("[[1, true, 1]]", "finite pixel"),
        ("{not json", "not JSON"),
        ('{"x": 1}', "list of"),
        ("[[100, 5, 1]]", "outside the 100x128 image"),
        ("[]", "click on the image"),
        (json.dumps([[1, 1, 1]] * 65), "at most 64"),
    ]:
        with pytest.raises(PromptError, match=message):
            click_prompts(bad, (128, 100))
    with pytest.raises(PromptError, match="mode"):
        add_click("[]", 1, 1, "maybe")


def test_clicks_segment_from_the_kept_embedding(instance, scene, other_scene, tmp_path):
    handler = ClickHandler(instance)
    handler.images.release()  # whatever an earlier test left
    with image_encoders(instance) as calls:
        first = handler.run(scene, "[[30, 40, 1]]", VOCAB, out_dir=tmp_path)
        second = handler.run(scene, "[[30, 40, 1], [100, 100, 0]]", VOCAB, out_dir=tmp_path)
        assert calls["sam"].calls == 1 and calls["proposals"].calls == 0
        handler.run(other_scene, "[[30, 40, 1]]", VOCAB, out_dir=tmp_path)
        assert calls["sam"].calls == 2
    assert (first.cached, second.cached) == (False, True)
    np.testing.assert_array_equal(second.points.coords, [[30.5, 40.5], [100.5, 100.5]])

    clicked = PointPrompts([[30.5, 40.5], [100.5, 100.5]], [1, 0])
    direct = instance.segment_clicks(instance.encode(scene), clicked, VOCAB)
    np.testing.assert_array_equal(second.instances.masks, direct.masks)
    np.testing.assert_array_equal(second.instances.labels, direct.labels)
    assert second.overlay.shape == scene.shape
    assert tuple(second.overlay[40, 30]) == POINT_COLOURS[1]
    assert tuple(second.overlay[100, 100]) == POINT_COLOURS[0]
    assert len(second.table) == len(second.instances) == 1
    assert second.table[0][0] in {"red star", "blue ring", "water", "wall"}
    saved = json.loads(second.files[0].read_text())
    assert saved["instances"][0]["name"] == second.table[0][0]


def test_tabs_sharing_a_pipeline_share_its_encoded_images(instance, scene, other_scene, tmp_path):
    clicks, instances = ClickHandler(instance), InstanceHandler(instance)
    assert clicks.images is instances.images is EncodedImages.shared(instance)
    clicks.images.release()
    clicks.run(other_scene, "[[10, 10, 1]]", VOCAB, out_dir=tmp_path)
    on_scene = instances.run(scene, VOCAB, score_threshold=0.0, out_dir=tmp_path)
    clicks.run(other_scene, "[[10, 10, 1]]", VOCAB, out_dir=tmp_path)
    again = instances.run(scene, VOCAB, score_threshold=0.0, out_dir=tmp_path)
    assert again.cached  # both images stay encoded: no tab replaces the other's
    np.testing.assert_array_equal(again.instances.masks, on_scene.instances.masks)


def test_release_memory_drops_the_encoded_images(instance, scene, tmp_path):
    handler = ClickHandler(instance)
    handler.run(scene, "[[30, 40, 1]]", VOCAB, out_dir=tmp_path)
    assert len(handler.images) >= 1
    assert not instance.decoder.is_image_set  # the pipeline keeps no image of its own
    handler.release_memory()
    assert len(handler.images) == 0
    assert not handler.run(scene, "[[30, 40, 1]]", VOCAB, out_dir=tmp_path).cached


# ----------------------------------------------------------------------------- vocabulary-free
def test_vocab_free_segments_with_names_found_in_the_database(
    vocab_free, tiny_task_config, scene, tmp_path
):
    out = VocabFreeHandler(vocab_free).run(scene, out_dir=tmp_path)
    names = [row[0] for row in out.names]
    assert 1 <= len(names) <= 4 and set(names) <= set(DATABASE_NAMES)
    assert all(len(row) == len(FOUND_NAMES_HEADERS) for row in out.names)
    scores = [row[1] for row in out.names]
    assert scores == sorted(scores, reverse=True)
    assert out.result.class_names == names
    assert [row[0] for row in out.table] == names
    assert all(len(row) == len(TABLE_HEADERS) for row in out.table)
    assert out.overlay.shape == scene.shape
    present = [row[0] for row in out.table if row[1] > 0]
    assert sorted(e.name for e in out.legend) == sorted(present)

    json_path, labels_path, _ = out.files
    saved = json.loads(json_path.read_text())
    assert [n["name"] for n in saved["meta"]["vocab_free"]["names"]] == names
    np.testing.assert_array_equal(read_label_png(labels_path), out.result.sem_seg)

    from ovseg.api import build_vocab_free_pipeline

    direct = build_vocab_free_pipeline(tiny_task_config)(scene)
    assert direct.class_names == names
    np.testing.assert_array_equal(direct.sem_seg, out.result.sem_seg)


def test_each_task_is_built_from_its_config_section(tiny_task_config, one_torch_thread):
    from ovseg.pipelines.instance import InstanceSegmenter
    from ovseg.pipelines.referring import ReferringSegmenter
    from ovseg.pipelines.vocab_free import VocabFreeSegmenter

    provider = PipelineProvider(tiny_task_config)
    assert isinstance(provider.get("referring"), ReferringSegmenter)
    assert isinstance(provider.get("instance"), InstanceSegmenter)
    assert isinstance(provider.get("vocab_free"), VocabFreeSegmenter)
    bare = {"pipeline": tiny_task_config["pipeline"], "vocabulary": ["a", "b"]}
    with pytest.raises(ConfigError, match="no pipeline for task 'referring'"):
        PipelineProvider(bare).get("referring")
    with pytest.raises(ConfigError, match="names no text database"):
        PipelineProvider(bare).get("vocab_free")


def test_encoded_images_report_reuse_and_are_shared_per_pipeline():
    class Recorder:
        def __init__(self):
            self.images = []

        def encode(self, image):
            self.images.append(image)
            return ("encoded", len(self.images))

    first, second = Recorder(), Recorder()
    images = EncodedImages.shared(first)
    assert EncodedImages.shared(first) is images and EncodedImages.shared(second) is not images
    image = np.zeros((2, 3, 3), np.uint8)
    assert images.get(image, image_digest(image)) == (("encoded", 1), False)
    assert images.get(image, image_digest(image)) == (("encoded", 1), True)
    images.release()
    assert images.get(image, image_digest(image)) == (("encoded", 2), False)
    assert len(first.images) == 2 and second.images == []


# ----------------------------------------------------------------------------- reasoning
QUESTION = "What is the largest object ? Please segment it ."


@pytest.fixture(scope="module")
def reasoning(tiny_provider):
    return tiny_provider.get("reasoning")


def test_reasoning_answers_with_a_mask_its_points_and_files(reasoning, scene, tmp_path):
    from ovseg.visualize import reasoning_overlay

    out = ReasoningHandler(reasoning).run(scene, f"  {QUESTION} ", out_dir=tmp_path)
    assert out.answer == "Sure [SEG] ." and out.note == ""
    assert out.result.question == QUESTION and out.result.masks.shape == (1, 128, 128)
    direct = reasoning.predict(reasoning.encode(scene), QUESTION)
    np.testing.assert_array_equal(out.result.masks, direct.masks)
    # the overlay: the answer above the input, the mask tinted and its SasP points drawn
    np.testing.assert_array_equal(out.overlay, reasoning_overlay(scene, out.result, opacity=0.5))
    assert out.overlay.shape[1] == 128 and out.overlay.shape[0] > 128
    body = out.overlay[-128:]
    points = out.result.points[0]
    x, y = (int(v) for v in points.coords[points.labels == 1][0])
    assert tuple(body[y, x]) == POINT_COLOURS[1]
    mask = out.result.masks[0]
    assert mask.any() and not np.array_equal(body[mask], scene[mask])  # tinted inside
    ((index, score, area, box),) = out.table
    assert (
        index == 0
        and area == int(mask.sum())
        and box == format_box(out.result.to_dict()["masks"][0]["box_xyxy"])
    )
    assert len(REASONING_HEADERS) == len(out.table[0])
    names = [p.name for p in out.files]
    assert names[0].endswith("-reasoning.json") and names[1].endswith("_mask_0.png")
    assert names[2].endswith("_overlay.png") and all(p.parent == tmp_path for p in out.files)
    saved = json.loads(out.files[0].read_text())
    assert saved["answer"] == "Sure [SEG] ." and saved["masks"][0]["area"] == area
    assert saved["meta"]["image_digest"] == image_digest(scene)
    assert np.array_equal(read_image(out.files[1])[..., 0] > 0, mask)


def test_another_question_on_the_same_image_reuses_sams_embedding(reasoning, scene, tmp_path):
    handler = ReasoningHandler(reasoning)
    handler.images.release()
    sam = ForwardCounter(reasoning.model.visual_model.image_encoder)
    try:
        first = handler.run(scene, QUESTION, out_dir=tmp_path)
        second = handler.run(scene, "Where is the water ?", out_dir=tmp_path)
    finally:
        sam.remove()
    assert (first.cached, second.cached) == (False, True)
    assert sam.calls == 1


def test_an_answer_without_seg_gives_text_and_no_mask(tmp_path, scene, one_torch_thread):
    from ovseg.pipelines.reasoning import ReasoningSegmenter
    from tests.models.multimodal.read_tiny import script_language_model, tiny_read_model

    model, tok = tiny_read_model(seed=0)
    script_language_model(model, tok, {":": "no", "no": "</s>"})
    out = ReasoningHandler(ReasoningSegmenter(model=model, tokenizer=tok)).run(
        scene, QUESTION, out_dir=tmp_path
    )
    assert out.answer == "no" and out.note == NO_MASK_NOTE
    assert out.overlay is None and out.table == [] and out.result.masks.shape == (0, 128, 128)
    assert [p.suffix for p in out.files] == [".json", ".png"]  # results and the answer picture
    assert json.loads(out.files[0].read_text())["num_masks"] == 0


def test_reasoning_errors_are_typed_and_the_next_request_works(reasoning, scene, tmp_path):
    handler = ReasoningHandler(reasoning)
    for question in ("", "   ", None):
        with pytest.raises(PromptError, match="question is empty"):
            handler.run(scene, question, out_dir=tmp_path)
    with pytest.raises(PromptError, match="shorten it"):
        handler.run(scene, "why " * 300, out_dir=tmp_path)
    with pytest.raises(ImageReadError, match="No image given"):
        handler.run(None, QUESTION, out_dir=tmp_path)
    assert handler.run(scene, QUESTION, out_dir=tmp_path).answer == "Sure [SEG] ."


def test_the_reasoning_tab_refuses_a_pipeline_that_does_not_answer_questions(referring):
    with pytest.raises(ConfigError, match="answers questions"):
        ReasoningHandler(referring)
