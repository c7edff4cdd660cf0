"""End to end in headless Chromium (Playwright): load the page, run the semantic task on an
example, check the overlay and the legend. Screenshots go to ``$OVSEG_TEST_ARTIFACTS`` (default:
the test's tmp folder)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from ovseg.demo.security import resolve_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
    pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*"),
]


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("OVSEG_TEST_ARTIFACTS") or tmp_path) / "demo_browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def served(one_torch_thread, examples_dir, free_port):
    from ovseg.demo.app import serve

    settings = resolve_settings(port=free_port(), examples_dir=examples_dir)
    served = serve(settings, "shapes-tiny", block=False)
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def page(tmp_path):
    from playwright import sync_api

    profile = tmp_path / "chromium-profile"
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def wait_for_new_overlay(page, previous_src: str | None) -> None:
    page.wait_for_function(
        "previous => { const img = document.querySelector('#semantic-overlay img');"
        " return img && img.getAttribute('src') !== previous && img.complete"
        " && img.naturalWidth > 0; }",
        arg=previous_src,
    )


def check_reasoning_tab_of_the_preset(page, ctx) -> None:
    """The preset's Reasoning tab: its inputs when the packaged READ folder is installed, else
    the message naming what is missing (and no inputs)."""
    from ovseg.demo.tabs.reasoning import TAB
    from ovseg.errors import WeightsNotFoundError

    try:
        ctx.handler(TAB)
        installed = True
    except WeightsNotFoundError:
        installed = False
    page.get_by_role("tab", name="Reasoning").click()
    if installed:
        page.wait_for_selector("#reasoning-run")
        return
    message = page.locator("#reasoning-unavailable")
    message.wait_for()
    assert "Reasoning is unavailable" in message.inner_text()
    assert "read-shapes-tiny" in message.inner_text()
    # file names are shown literally (their underscores are not Markdown emphasis)
    assert "configs/read/shapes_tiny_read_caption.yaml" in message.inner_text()
    assert page.locator("#reasoning-run").count() == 0


def test_semantic_task_on_an_example_in_chromium(served, page, artifacts, examples_dir):
    import ovseg

    started, served_url = time.monotonic(), served.url
    hosts, errors = set(), []
    page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(30_000)

    page.goto(served_url, wait_until="domcontentloaded")
    page.wait_for_selector("#semantic-run")
    page.screenshot(path=str(artifacts / "01_loaded.png"), full_page=True)
    assert [t.strip() for t in page.get_by_role("tab").all_inner_texts()] == [
        "Semantic segmentation",
        "Referring segmentation",
        "Instances / detection",
        "Click to segment",
        "Vocabulary-free",
        "Reasoning",
        "Video",
    ]
    check_reasoning_tab_of_the_preset(page, served.context)
    page.get_by_role("tab", name="Semantic segmentation").click()

    page.locator("#semantic-examples :is(button.gallery-item, tbody tr)").first.click()
    page.wait_for_selector("#semantic-image img")
    vocabulary = page.locator("#semantic-vocabulary textarea").input_value()
    assert vocabulary == "red star, red diamond, blue square, blue ring, water, wall"

    page.click("#semantic-run")
    page.wait_for_selector("#semantic-legend .ovseg-legend-item")
    overlay = page.locator("#semantic-overlay img")
    overlay.wait_for()
    page.wait_for_function(
        "() => { const img = document.querySelector('#semantic-overlay img');"
        " return img && img.complete && img.naturalWidth > 0; }"
    )
    page.screenshot(path=str(artifacts / "02_segmented.png"), full_page=True)

    size = overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [128, 128]
    expected = ovseg.create_pipeline("shapes-tiny")(
        examples_dir / "shapes_scene.jpg", vocabulary
    ).to_dict()["classes"]
    present = [c["name"] for c in sorted(expected, key=lambda c: -c["area"]) if c["area"] > 0]
    legend = page.locator("#semantic-legend .ovseg-legend-item").all_inner_texts()
    assert [text.rsplit(" ", 1)[0] for text in legend] == present
    first_column = page.locator('#semantic-table [role="gridcell"][data-col="0"]')
    assert first_column.all_inner_texts() == [c["name"] for c in expected]
    downloads = page.locator("#semantic-files").inner_text()
    assert "_labels" in downloads and ".json" in downloads and "_overlay" in downloads

    before = overlay.get_attribute("src")
    page.fill("#semantic-vocabulary textarea", "water, wall")
    page.press("#semantic-vocabulary textarea", "Enter")  # submit: same image, new vocabulary
    page.wait_for_function(
        "() => document.querySelectorAll('#semantic-legend .ovseg-legend-item').length === 2"
    )
    wait_for_new_overlay(page, before)
    page.screenshot(path=str(artifacts / "03_new_vocabulary.png"), full_page=True)

    before = overlay.get_attribute("src")
    page.locator("#semantic-opacity input[type=range]").fill("1")
    page.locator("#semantic-opacity input[type=range]").dispatch_event("pointerup")
    wait_for_new_overlay(page, before)
    page.screenshot(path=str(artifacts / "04_opacity_1.png"), full_page=True)

    assert hosts == {served_url.split("/")[2]}  # nothing fetched from outside
    assert not errors
    assert (artifacts / "02_segmented.png").stat().st_size > 0

    sessions = served.context.files.root
    assert [p.name for p in sessions.iterdir()]  # this session's result files
    page.goto("about:blank")  # leaving the page ends the session: its folder goes
    assert wait_until(lambda: not any(sessions.iterdir()), timeout=20)
    assert time.monotonic() - started < 60


@pytest.fixture
def served_tasks(one_torch_thread, tiny_task_config, examples_dir, free_port):
    from ovseg.demo.app import serve

    settings = resolve_settings(port=free_port(), examples_dir=examples_dir)
    served = serve(settings, tiny_task_config, block=False)
    try:
        yield served
    finally:
        served.close()


def wait_for_image(page, selector: str, previous_src: str | None = None) -> list[int]:
    """Wait until ``selector`` shows a loaded image (other than ``previous_src``); its size."""
    page.wait_for_function(
        "([selector, previous]) => { const img = document.querySelector(selector);"
        " return img && img.getAttribute('src') !== previous && img.complete"
        " && img.naturalWidth > 0; }",
        arg=[selector, previous_src],
    )
    return page.locator(selector).evaluate("img => [img.naturalWidth, img.naturalHeight]")


def open_tab_with_example(page, title: str, key: str) -> None:
    page.get_by_role("tab", name=title).click()
    page.wait_for_selector(f"#{key}-run")
    page.locator(f"#{key}-examples :is(button.gallery-item, tbody tr)").first.click()
    page.wait_for_selector(f"#{key}-image img")


def clip_file(folder: Path) -> Path:
    """An 8-frame, 64 px MP4 of the synthetic video generator, written in ``folder``."""
    import numpy as np

    from ovseg.data.synthetic_video import generate_clip
    from ovseg.io_video import VideoWriter

    path = folder / "clip.mp4"
    with VideoWriter(path, fps=8) as writer:
        for frame in generate_clip(np.random.default_rng(1), num_frames=8, image_size=64).frames:
            writer.write(frame)
    return path


def test_referring_instance_and_click_tabs_in_chromium(served_tasks, page, artifacts):
    started, served_url = time.monotonic(), served_tasks.url
    hosts, errors = set(), []
    page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(30_000)
    page.goto(served_url, wait_until="domcontentloaded")
    page.wait_for_selector("#semantic-run")
    tabs = page.get_by_role("tab").all_inner_texts()
    assert [t.strip() for t in tabs] == [
        "Semantic segmentation",
        "Referring segmentation",
        "Instances / detection",
        "Click to segment",
        "Vocabulary-free",
        "Reasoning",
        "Video",
    ]

    # referring: the example's phrase, the mask with its points and the similarity map
    open_tab_with_example(page, "Referring segmentation", "referring")
    assert page.locator("#referring-phrase textarea").input_value() == "red star"
    page.click("#referring-run")
    assert wait_for_image(page, "#referring-mask img") == [128, 128]
    assert wait_for_image(page, "#referring-similarity img") == [128, 128]
    cells = page.locator('#referring-table [role="gridcell"]')
    cells.first.wait_for()
    assert cells.first.inner_text() == "red star"
    page.screenshot(path=str(artifacts / "05_referring.png"), full_page=True)

    # instances: masks with boxes and captions, a row per instance, the threshold slider
    open_tab_with_example(page, "Instances / detection", "instance")
    page.click("#instance-run")
    assert wait_for_image(page, "#instance-overlay img") == [128, 128]
    rows = page.locator('#instance-table [role="gridcell"][data-col="0"]')
    rows.first.wait_for()
    assert rows.count() >= 1
    page.screenshot(path=str(artifacts / "06_instances.png"), full_page=True)
    before = page.locator("#instance-overlay img").get_attribute("src")
    page.locator("#instance-threshold input[type=range]").fill("1")
    page.locator("#instance-threshold input[type=range]").dispatch_event("pointerup")
    wait_for_image(page, "#instance-overlay img", before)  # every instance scores below 1
    page.wait_for_function(
        '() => !document.querySelector(\'#instance-table [role="gridcell"][data-col="0"]\')'
    )
    page.screenshot(path=str(artifacts / "07_instances_threshold_1.png"), full_page=True)

    # click to segment: a click on the image runs SAM from the kept embedding
    open_tab_with_example(page, "Click to segment", "clicks")
    page.locator("#clicks-image img").click(position={"x": 20, "y": 20})
    assert wait_for_image(page, "#clicks-overlay img") == [128, 128]
    clicks = json.loads(page.locator("#clicks-points textarea").input_value())
    assert len(clicks) == 1 and clicks[0][2] == 1
    page.screenshot(path=str(artifacts / "08_clicks.png"), full_page=True)
    page.click("#clicks-clear")
    page.wait_for_function("() => document.querySelector('#clicks-points textarea').value === '[]'")

    # reasoning: a question about the example, the answer, its mask with the SasP points
    open_tab_with_example(page, "Reasoning", "reasoning")
    page.fill("#reasoning-question textarea", "What is the largest object ? Please segment it .")
    page.click("#reasoning-run")
    width, height = wait_for_image(page, "#reasoning-overlay img")
    assert width == 128 and height > 128  # the answer is written above the image
    assert page.locator("#reasoning-answer textarea").input_value() == "Sure [SEG] ."
    cells = page.locator('#reasoning-table [role="gridcell"][data-col="0"]')
    cells.first.wait_for()
    assert cells.all_inner_texts() == ["0"]
    assert "_mask_0" in page.locator("#reasoning-files").inner_text()
    page.screenshot(path=str(artifacts / "09_reasoning.png"), full_page=True)

    # video: an uploaded 8-frame clip, a vocabulary, the overlay video and a row per track
    page.get_by_role("tab", name="Video").click()
    page.wait_for_selector("#video-run")
    page.locator("#video-clip input[type=file]").set_input_files(str(clip_file(artifacts)))
    page.wait_for_selector("#video-clip video")
    page.get_by_label("Vocabulary (instance)").check()
    page.fill("#video-text textarea", "red star, blue ring")
    page.click("#video-run")
    page.wait_for_selector("#video-overlay video")
    cells = page.locator('#video-table [role="gridcell"][data-col="1"]')
    cells.first.wait_for()
    assert set(cells.all_inner_texts()) <= {"red star", "blue ring"}
    files = page.locator("#video-files").inner_text().replace("\n", "")
    assert "-video-instance_tracks.json" in files and "-video-instance_overlay.mp4" in files
    page.screenshot(path=str(artifacts / "10_video.png"), full_page=True)

    assert hosts == {served_url.split("/")[2]}  # nothing fetched from outside
    assert not errors
    assert time.monotonic() - started < 60
