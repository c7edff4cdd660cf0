"""Building the Blocks app: tabs from specs, the bounded queue, the concurrency group."""

from __future__ import annotations

import gradio as gr
import pytest

from ovseg.demo.app import build_demo, create_context
from ovseg.demo.handlers import PipelineProvider, SessionFiles
from ovseg.demo.tabs import TABS, TabSpec
from ovseg.demo.tabs.base import MODEL_CONCURRENCY_ID
from ovseg.errors import ConfigError


def context(pipeline, tmp_path, examples_dir=None, concurrency=1, missing=("referring",)):
    def factory(source, task, overrides, device):
        if task in missing:
            raise ConfigError(f"{source} has no pipeline for task {task!r}.")
        return pipeline

    return create_context(
        "shapes-tiny",
        examples_dir=examples_dir,
        concurrency=concurrency,
        provider=PipelineProvider("shapes-tiny", factory=factory),
        files=SessionFiles(tmp_path / "sessions"),
    )


def tab_labels(demo) -> list[str]:
    return [c["props"]["label"] for c in demo.config["components"] if c["type"] == "tabitem"]


def probe_tab(optional: bool) -> TabSpec:
    def build(ctx, spec):
        gr.Markdown("probe")

    return TabSpec("probe", "Probe", "referring", lambda pipeline: pipeline, build, optional)


def test_tabs_queue_and_concurrency_follow_the_settings(shapes_tiny, tmp_path, examples_dir):
    ctx = context(shapes_tiny, tmp_path, examples_dir, concurrency=3)
    demo = build_demo(ctx, tabs=[*TABS, probe_tab(optional=True)], queue_size=5)
    assert tab_labels(demo) == ["Semantic segmentation"]  # the probe's task has no pipeline
    assert demo._queue.max_size == 5 and demo.api_open is False
    model_events = [fn for fn in demo.fns.values() if fn.name == "segment"]
    assert len(model_events) == 2  # button and Enter in the vocabulary box
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in model_events} == {
        (MODEL_CONCURRENCY_ID, 3)
    }
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert public == {"segment"}


def test_a_required_tab_without_its_pipeline_stops_the_build(shapes_tiny, tmp_path):
    with pytest.raises(ConfigError, match="no pipeline for task 'referring'"):
        build_demo(context(shapes_tiny, tmp_path), tabs=[*TABS, probe_tab(optional=False)])


def test_the_semantic_tab_defaults_to_the_first_example_or_the_preset_vocabulary(
    shapes_tiny, tmp_path, examples_dir
):
    def vocabulary_box(demo):
        (box,) = [
            c
            for c in demo.config["components"]
            if c["props"].get("elem_id") == "semantic-vocabulary"
        ]
        return box["props"]["value"]

    with_examples = build_demo(context(shapes_tiny, tmp_path, examples_dir))
    assert vocabulary_box(with_examples).startswith("red star, red diamond")
    without = build_demo(context(shapes_tiny, tmp_path))
    classes = vocabulary_box(without).split(", ")
    assert len(classes) == len(shapes_tiny.vocabulary) == 68
    assert classes == ["|".join(names) for names in shapes_tiny.vocabulary.classes]
