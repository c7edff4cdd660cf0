"""The referring, instance, click, vocabulary-free, reasoning and video endpoints over HTTP
(gradio_client), on a config with every task on tiny random models. One server for the module, on a free port."""

from __future__ import annotations

import json

import gradio_client
import httpx
import numpy as np
import pytest
from gradio_client.exceptions import AppError
from PIL import Image

from ovseg.demo.handlers import (
    FOUND_NAMES_HEADERS,
    INSTANCE_HEADERS,
    NO_MASK_NOTE,
    REASONING_HEADERS,
    REFERRING_HEADERS,
    VIDEO_HEADERS,
)
from ovseg.demo.security import resolve_settings
from ovseg.io import read_label_png
from tests.demo.conftest import DATABASE_NAMES

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

VOCAB = "red star, blue ring, water, wall"


@pytest.fixture(scope="module")
def served(tiny_provider, examples_dir, tmp_path_factory, free_port, served_demo):
    settings = resolve_settings(port=free_port(), examples_dir=examples_dir)
    sessions = tmp_path_factory.mktemp("sessions")
    with served_demo(settings, None, sessions, provider=tiny_provider) as served:
        yield served


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    return gradio_client.Client(
        served[2],
        verbose=False,
        analytics_enabled=False,
        download_files=str(tmp_path_factory.mktemp("downloads")),
    )


@pytest.fixture(scope="module")
def scene(examples_dir):
    return gradio_client.handle_file(str(examples_dir / "shapes_scene.jpg"))


def image_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def named(files, suffix):
    return next(str(f) for f in files if str(f).endswith(suffix))


def test_the_public_endpoints_are_one_per_task(served):
    with httpx.Client(base_url=served[2], timeout=30) as http:
        endpoints = http.get("/gradio_api/info").json()["named_endpoints"]
    tasks = {
        "/segment",
        "/refer",
        "/detect",
        "/segment_clicks",
        "/segment_vocab_free",
        "/reason",
        "/track_video",
    }
    assert tasks <= set(endpoints)
    assert all(name in tasks or name.startswith("/load_example") for name in endpoints)


def test_refer_returns_mask_and_similarity_images_of_the_input_size(
    client, scene, served, examples_dir, tmp_path
):
    mask, similarity, table, files = client.predict(scene, "red star", api_name="/refer")
    assert image_size(mask) == image_size(similarity) == (128, 128)
    assert table["headers"] == REFERRING_HEADERS
    ((phrase, score, area, box),) = table["data"]
    assert phrase == "red star" and 0 < area <= 128 * 128
    saved = json.loads(open(named(files, ".json")).read())
    assert saved["area"] == area and saved["phrase"] == "red star"
    assert len(saved["points"]["labels"]) > 0
    assert image_size(named(files, "_mask.png")) == (128, 128)
    from ovseg.demo.tabs.referring import TAB

    direct = (
        served[1].handler(TAB).run(examples_dir / "shapes_scene.jpg", "red star", out_dir=tmp_path)
    )
    np.testing.assert_array_equal(np.asarray(Image.open(mask)), direct.mask_overlay)
    np.testing.assert_array_equal(np.asarray(Image.open(similarity)), direct.heat_map)


def test_detect_applies_the_threshold_and_writes_instance_ids(client, scene):
    overlay, table, files = client.predict(scene, VOCAB, 0.0, api_name="/detect")
    assert image_size(overlay) == (128, 128)
    assert table["headers"] == INSTANCE_HEADERS
    rows = table["data"]
    assert len(rows) >= 2 and {row[0] for row in rows} <= set(VOCAB.split(", "))
    ids = read_label_png(named(files, "_instance_ids.png"))
    assert ids.shape == (128, 128) and ids.max() <= len(rows)
    scores = sorted(row[1] for row in rows)
    threshold = (scores[0] + scores[1]) / 2  # between the two lowest: one instance fewer
    _, fewer, _ = client.predict(scene, VOCAB, threshold, api_name="/detect")
    assert len(fewer["data"]) == len(rows) - 1


def test_segment_clicks_names_the_clicked_mask(client, scene):
    overlay, table, files = client.predict(
        scene, "[[30, 40, 1]]", VOCAB, api_name="/segment_clicks"
    )
    assert image_size(overlay) == (128, 128)
    assert len(table["data"]) == 1 and table["data"][0][0] in VOCAB.split(", ")
    assert (
        json.loads(open(named(files, ".json")).read())["instances"][0]["name"]
        == (table["data"][0][0])
    )


def test_bad_clicks_are_shown_and_the_next_request_works(client, scene):
    with pytest.raises(AppError, match="outside the 128x128 image"):
        client.predict(scene, "[[500, 40, 1]]", VOCAB, api_name="/segment_clicks")
    with pytest.raises(AppError, match="click on the image"):
        client.predict(scene, "[]", VOCAB, api_name="/segment_clicks")
    with pytest.raises(AppError, match="phrase is empty"):
        client.predict(scene, " ", api_name="/refer")
    overlay, table, _ = client.predict(scene, "[[64, 64, 1]]", VOCAB, api_name="/segment_clicks")
    assert image_size(overlay) == (128, 128) and len(table["data"]) == 1


def test_segment_vocab_free_lists_the_found_names(client, scene):
    overlay, legend, names, table, files = client.predict(scene, api_name="/segment_vocab_free")
    assert image_size(overlay) == (128, 128)
    assert names["headers"] == FOUND_NAMES_HEADERS
    found = [row[0] for row in names["data"]]
    assert found and set(found) <= set(DATABASE_NAMES)
    assert [row[0] for row in table["data"]] == found
    assert read_label_png(named(files, "_labels.png")).shape == (128, 128)
    present = [row[0] for row in table["data"] if row[1] > 0]
    assert legend.count('class="ovseg-legend-item"') == len(present)


QUESTION = "What is the largest object ? Please segment it ."


def test_reason_returns_the_answer_and_the_masks_with_their_points(
    client, scene, served, examples_dir, tmp_path
):
    answer, note, overlay, table, files = client.predict(scene, QUESTION, api_name="/reason")
    assert answer == "Sure [SEG] ." and note == ""
    width, height = image_size(overlay)
    assert width == 128 and height > 128  # the answer is written above the image
    assert table["headers"] == REASONING_HEADERS
    ((index, score, area, box),) = table["data"]
    assert index == 0 and 0 < area <= 128 * 128
    saved = json.loads(open(named(files, ".json")).read())
    assert saved["question"] == QUESTION and saved["masks"][0]["area"] == area
    assert len(saved["masks"][0]["points"]["labels"]) > 0
    assert image_size(named(files, "_mask_0.png")) == (128, 128)
    from ovseg.demo.tabs.reasoning import TAB

    direct = (
        served[1].handler(TAB).run(examples_dir / "shapes_scene.jpg", QUESTION, out_dir=tmp_path)
    )
    np.testing.assert_array_equal(np.asarray(Image.open(overlay)), direct.overlay)


def test_reason_errors_are_shown_and_the_next_request_works(client, scene):
    with pytest.raises(AppError, match="question is empty"):
        client.predict(scene, "  ", api_name="/reason")
    with pytest.raises(AppError, match="No image given"):
        client.predict(None, QUESTION, api_name="/reason")
    answer, *_ = client.predict(scene, QUESTION, api_name="/reason")
    assert answer == "Sure [SEG] ."


def test_reason_without_seg_answers_in_text_only(client, scene, served):
    """A READ whose answer has no ``[SEG]``: the answer and a note, no image, no mask file."""
    from ovseg.demo.tabs.reasoning import TAB
    from tests.models.multimodal.read_tiny import script_language_model

    pipeline = served[1].handler(TAB).pipeline
    kept = {name: value.clone() for name, value in pipeline.model.state_dict().items()}
    script_language_model(pipeline.model, pipeline.tokenizer, {":": "no", "no": "</s>"})
    try:
        answer, note, overlay, table, files = client.predict(
            scene, "Is there a cat ?", api_name="/reason"
        )
    finally:
        pipeline.model.load_state_dict(kept)
    assert answer == "no" and note == NO_MASK_NOTE and overlay is None
    assert table["headers"] == REASONING_HEADERS and table["data"] == []
    assert not [f for f in files if "_mask_" in str(f)]
    assert json.loads(open(named(files, ".json")).read())["num_masks"] == 0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """An 8-frame, 64 px MP4 of the synthetic video generator."""
    from ovseg.data.synthetic_video import generate_clip
    from ovseg.io_video import VideoWriter

    generated = generate_clip(np.random.default_rng(1), num_frames=8, image_size=64)
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with VideoWriter(path, fps=8) as writer:
        for frame in generated.frames:
            writer.write(frame)
    return path


def test_track_video_returns_the_overlay_the_tracks_file_and_the_table(client, clip):
    import av

    from ovseg.tracks import read_tracks

    upload = gradio_client.handle_file(str(clip))
    overlay, table, files = client.predict(
        upload, "Vocabulary (instance)", "red star, blue ring", api_name="/track_video"
    )
    assert str(overlay).endswith("-video-instance_overlay.mp4")
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8
    tracks = read_tracks(named(files, "_tracks.json"))
    assert tracks.data["class_names"] == ["red star", "blue ring"]
    assert tracks.frame_indices == list(range(8))
    assert table["headers"] == VIDEO_HEADERS
    assert [row[0] for row in table["data"]] == [t["id"] for t in tracks.tracks]
    assert any(str(f).endswith("_overlay.mp4") for f in files)


def test_track_video_refuses_a_clip_over_budget_and_the_next_request_works(client, clip, served):
    from ovseg.demo.tabs.video import TAB

    handler = served[1].handler(TAB)
    upload = gradio_client.handle_file(str(clip))
    previous, handler.max_frames = handler.max_frames, 4
    try:
        with pytest.raises(AppError, match="8 frames, more than the cap of 4"):
            client.predict(upload, "Phrase (referring)", "red star", api_name="/track_video")
    finally:
        handler.max_frames = previous
    with pytest.raises(AppError, match="phrase is empty"):
        client.predict(upload, "Phrase (referring)", " ", api_name="/track_video")
    _, table, _ = client.predict(upload, "Phrase (referring)", "red star", api_name="/track_video")
    assert table["headers"] == VIDEO_HEADERS and len(table["data"]) <= 8
