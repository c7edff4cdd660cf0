"""The served app over HTTP: the /segment endpoint (gradio_client), login, upload cap, served
paths, error messages and the bounded queue. One server for the module, on a free port."""

from __future__ import annotations

import json
import threading
import time

import gradio_client
import httpx
import numpy as np
import pytest
import torch
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError, Status
from PIL import Image

from ovseg.demo.handlers import TABLE_HEADERS
from ovseg.demo.security import resolve_settings
from ovseg.io import read_label_png

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

USER, PASSWORD = "tester", "a-long-test-secret"
VOCAB = "red star, blue ring, water, wall, sand"
MAX_UPLOAD_MB = 0.05


@pytest.fixture(scope="module")
def served(shapes_tiny, examples_dir, tmp_path_factory, free_port, served_demo):
    settings = resolve_settings(
        port=free_port(),
        auth=f"{USER}:{PASSWORD}",
        max_upload_mb=MAX_UPLOAD_MB,
        queue_size=1,
        concurrency=1,
        examples_dir=examples_dir,
    )
    with served_demo(settings, shapes_tiny, tmp_path_factory.mktemp("sessions")) as served:
        yield served


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    _, _, url = served
    return gradio_client.Client(
        url,
        auth=(USER, PASSWORD),
        verbose=False,
        analytics_enabled=False,
        download_files=str(tmp_path_factory.mktemp("downloads")),
    )


@pytest.fixture
def http(served):
    _, _, url = served
    with httpx.Client(base_url=url, timeout=30) as session:
        login = session.post("/login", data={"username": USER, "password": PASSWORD})
        assert login.status_code == 200
        yield session


def segment(client, image, vocabulary=VOCAB, opacity=0.5):
    return client.predict(
        gradio_client.handle_file(str(image)), vocabulary, opacity, api_name="/segment"
    )


def semantic_handler(served):
    from ovseg.demo.tabs.semantic import TAB

    return served[1].handler(TAB)


def test_segment_endpoint_returns_overlay_legend_table_and_files(client, examples_dir, shapes_tiny):
    image = examples_dir / "shapes_scene.jpg"
    overlay_path, legend, table, files = segment(client, image)

    overlay = np.asarray(Image.open(overlay_path))
    assert overlay.shape == (128, 128, 3)
    assert table["headers"] == TABLE_HEADERS
    assert [row[0] for row in table["data"]] == ["red star", "blue ring", "water", "wall", "sand"]
    expected = shapes_tiny(image, VOCAB)
    assert [row[1] for row in table["data"]] == list(expected.areas().values())
    present = [name for name, area in expected.areas().items() if area > 0]
    assert legend.count('class="ovseg-legend-item"') == len(present)
    assert all(name in legend for name in present)

    names = sorted(str(f).rsplit("/", 1)[-1] for f in files)
    assert [n.split("-", 1)[0] for n in names] == ["ovseg"] * 3
    json_file = next(f for f in files if str(f).endswith(".json"))
    labels_file = next(f for f in files if str(f).endswith("_labels.png"))
    assert [c["name"] for c in json.loads(open(json_file).read())["classes"]][-1] == "sand"
    np.testing.assert_array_equal(read_label_png(labels_file), expected.sem_seg)


def test_only_the_segment_endpoint_is_public(http):
    endpoints = http.get("/gradio_api/info").json()["named_endpoints"]
    assert "/segment" in endpoints
    assert all(name in ("/segment", "/load_example") for name in endpoints)


def test_login_is_required(served):
    _, _, url = served
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        assert anonymous.get("/config").status_code == 401
        upload = anonymous.post("/gradio_api/upload", files={"files": ("a.png", b"x")})
        assert upload.status_code == 401
        wrong = anonymous.post("/login", data={"username": USER, "password": "guess"})
        assert wrong.status_code == 400
        assert anonymous.get("/config").status_code == 401


def test_oversized_uploads_get_413(http):
    limit = int(MAX_UPLOAD_MB * 1024 * 1024)
    small = http.post("/gradio_api/upload", files={"files": ("ok.bin", b"x" * (limit // 2))})
    assert small.status_code == 200
    big = http.post("/gradio_api/upload", files={"files": ("big.bin", b"x" * (limit + 1024))})
    assert big.status_code == 413


def test_only_the_examples_folder_is_served(http, served, examples_dir, tmp_path, client):
    example = http.get(f"/gradio_api/file={examples_dir / 'shapes_scene.jpg'}")
    assert example.status_code == 200 and example.content[:2] == b"\xff\xd8"

    outside = tmp_path / "private.txt"
    outside.write_text("secret")
    segment(client, examples_dir / "shapes_scene.jpg")  # writes into the session folders
    session_files = [p for p in served[1].files.root.rglob("*") if p.is_file()]
    assert session_files
    for path in [
        outside,
        examples_dir.parent / "app.py",
        f"{examples_dir}/../app.py",
        "/etc/hostname",
        session_files[0],
    ]:
        response = http.get(f"/gradio_api/file={path}")
        assert response.status_code == 403, path
        assert b"secret" not in response.content


def test_handler_errors_are_shown_and_the_next_request_works(client, examples_dir):
    image = examples_dir / "shapes_scene.jpg"
    with pytest.raises(AppError, match="vocabulary is empty"):
        segment(client, image, vocabulary=" ")
    with pytest.raises(AppError, match="more than once"):
        segment(client, image, vocabulary="water, water")
    _, _, table, _ = segment(client, image, vocabulary="water, wall")
    assert len(table["data"]) == 2


def test_out_of_memory_is_shown_and_releases_the_cache(client, served, examples_dir, monkeypatch):
    handler = semantic_handler(served)
    original = handler.pipeline.query_scores
    calls = []

    def out_of_memory_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(*args)

    monkeypatch.setattr(handler.pipeline, "query_scores", out_of_memory_once)
    image = examples_dir / "synthetic_seed7_val0000.jpg"
    with pytest.raises(AppError, match="Out of memory"):
        segment(client, image)
    assert len(handler.cache) == 0
    _, _, table, _ = segment(client, image)
    assert len(table["data"]) == 5 and len(calls) == 2


def test_images_over_the_pixel_cap_are_refused_with_a_message(
    client, served, examples_dir, monkeypatch
):
    handler = semantic_handler(served)
    monkeypatch.setitem(handler.pipeline.inference, "max_pixels", 64 * 64)
    with pytest.raises(AppError, match=r"pixels.*Downscale the image"):
        segment(client, examples_dir / "synthetic_seed7_val0023.jpg")
    monkeypatch.undo()
    _, _, table, _ = segment(client, examples_dir / "synthetic_seed7_val0023.jpg")
    assert len(table["data"]) == 5


def test_unexpected_errors_hide_internals(client, served, examples_dir, monkeypatch):
    handler = semantic_handler(served)

    def broken(*args):
        raise KeyError("/internal/secret/path")

    monkeypatch.setattr(handler.pipeline, "query_scores", broken)
    with pytest.raises(AppError) as info:
        segment(client, examples_dir / "shapes_scene.jpg")
    assert "KeyError" in str(info.value) and "/internal/secret" not in str(info.value)


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_full_queue_answers_busy_instead_of_hanging(client, served, examples_dir, monkeypatch):
    handler = semantic_handler(served)
    original = handler.pipeline.query_scores
    running, release = threading.Event(), threading.Event()

    def slow(*args):
        running.set()
        release.wait(30)
        return original(*args)

    monkeypatch.setattr(handler.pipeline, "query_scores", slow)
    image = gradio_client.handle_file(str(examples_dir / "shapes_scene.jpg"))
    try:
        first = client.submit(image, VOCAB, 0.5, api_name="/segment")
        assert running.wait(20)  # occupies the one concurrency slot
        second = client.submit(image, VOCAB, 0.5, api_name="/segment")
        assert wait_for(lambda: second.status().code == Status.IN_QUEUE)  # fills the queue
        started = time.monotonic()
        third = client.submit(image, VOCAB, 0.5, api_name="/segment")
        with pytest.raises(QueueError, match="full"):
            third.result(timeout=20)
        assert time.monotonic() - started < 10
    finally:
        release.set()
    assert len(first.result(timeout=30)[2]["data"]) == 5
    assert len(second.result(timeout=30)[2]["data"]) == 5
