"""Every registered pipeline has the one shape: encode an image into a value, predict on it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import ovseg
from ovseg.errors import ConfigError
from ovseg.io import read_image
from ovseg.pipelines.base import EncodedImage, Pipeline, PromptablePipeline
from ovseg.registry import PIPELINES

SCENE = Path(__file__).resolve().parents[2] / "demo" / "examples" / "shapes_scene.jpg"


BUILT_IN = [n for n in PIPELINES.names() if PIPELINES.get(n).__module__.startswith("ovseg.")]
# Video pipelines take a video, not an image: they wrap an image pipeline (which follows the
# protocol) and stream frames through ``track(video, query)``.
VIDEO = [n for n in BUILT_IN if PIPELINES.get(n).__module__ == "ovseg.pipelines.video"]
BUILT_IN = [n for n in BUILT_IN if n not in VIDEO]


@pytest.mark.parametrize("name", VIDEO)
def test_video_pipelines_stream_frames_over_an_image_pipeline(name):
    cls = PIPELINES.get(name)
    assert "detector" in inspect.signature(cls).parameters
    for method in ("track", "__call__", "open"):
        assert callable(getattr(cls, method, None)), f"{name} lacks {method}"
    assert {"video", "query", "start", "stop", "step"} <= set(
        inspect.signature(cls.track).parameters
    )


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_pipeline_class_follows_the_protocol(name):
    cls = PIPELINES.get(name)
    assert issubclass(cls, PromptablePipeline), f"{name} should build on PromptablePipeline"
    for method in ("encode", "predict", "__call__", "set_image"):
        assert callable(getattr(cls, method, None)), f"{name} lacks {method}"
    assert issubclass(cls.encoded_type, EncodedImage)
    assert "encoded" in inspect.signature(cls.predict).parameters


@pytest.fixture(scope="module")
def pipelines():
    return {
        task: ovseg.create_pipeline("shapes-tiny", task=task)
        for task in ("semantic", "referring", "instance", "instance_sam")
    }


def test_built_pipelines_are_pipelines_and_refuse_foreign_values(pipelines):
    image = read_image(SCENE)
    semantic, referring = pipelines["semantic"], pipelines["referring"]
    assert all(isinstance(p, Pipeline) for p in pipelines.values())
    encoded = semantic.encode(image)
    assert encoded.size == image.shape[:2]
    with pytest.raises(ConfigError, match="needs a SamClipImage"):
        referring.predict(encoded, "red star")
    with pytest.raises(ConfigError, match="Unknown .* keys"):
        referring.predict(referring.encode(image), "red star", score_threshold=0.1)


@pytest.mark.parametrize("task", ["instance", "instance_sam"])
def test_predict_leaves_the_pipeline_unchanged(pipelines, task):
    instance = pipelines[task]
    before = dict(instance.postprocess)
    encoded = instance.encode(SCENE)
    everything = instance.predict(encoded, None, score_threshold=0.0)
    default = instance.predict(encoded)
    assert instance.postprocess == before
    assert len(everything) >= len(default)
    if task == "instance_sam":  # SAM's proposals are kept with the value
        assert instance.proposals(encoded) is instance.proposals(encoded)
