"""Task selection in create_pipeline / build_pipeline_config."""

from __future__ import annotations

import pytest

import ovseg
from ovseg.errors import ConfigError
from ovseg.registry import PIPELINES


@PIPELINES.register("ApiTestEchoPipeline")
class EchoPipeline:
    """Records what it was built with."""

    def __init__(self, backbone: dict, vocabulary=None, marker: str = "") -> None:
        self.backbone, self.vocabulary, self.marker = backbone, vocabulary, marker


@PIPELINES.register("ApiTestPhrasePipeline")
class PhrasePipeline:
    """A pipeline whose queries are phrases: it takes no default vocabulary."""

    def __init__(self, backbone: dict, marker: str = "") -> None:
        self.backbone, self.marker = backbone, marker


def config() -> dict:
    return {
        "pipeline": {"type": "ApiTestEchoPipeline", "backbone": {"name": "shared"}},
        "pipelines": {
            "referring": {
                "type": "ApiTestPhrasePipeline",
                "backbone": "${pipeline.backbone}",
                "marker": "ref",
            }
        },
        "vocabulary": ["a", "b"],
    }


def test_semantic_is_the_pipeline_section():
    built = ovseg.create_pipeline(config())
    assert built.marker == "" and built.vocabulary == ["a", "b"]
    assert built.meta["task"] == "semantic"


def test_task_section_resolves_interpolations_and_takes_no_vocabulary():
    built = ovseg.create_pipeline(config(), task="referring", device="cpu")
    assert built.marker == "ref"
    assert built.backbone == {"name": "shared", "device": "cpu"}
    assert not hasattr(built, "vocabulary")  # the config's vocabulary is not forced on it
    assert built.config["task"] == "referring"
    with pytest.raises(ConfigError, match="takes no vocabulary"):
        ovseg.create_pipeline(config(), ["x"], task="referring")


def test_kwargs_merge_into_the_chosen_section():
    built = ovseg.create_pipeline(config(), task="referring", marker="changed")
    assert built.marker == "changed"
    cfg = ovseg.build_pipeline_config(config(), task="referring", marker="x")
    assert cfg["pipelines"]["referring"]["marker"] == "x"
    assert cfg["pipeline"].get("marker") is None


def test_missing_or_unknown_task_is_a_clear_error():
    with pytest.raises(ConfigError, match="no pipeline for task 'instance'.*semantic, referring"):
        ovseg.create_pipeline(config(), task="instance")
    with pytest.raises(ConfigError, match="no pipeline for task 'panoptic'"):
        ovseg.create_pipeline(config(), task="panoptic")
    with pytest.raises(ConfigError, match="task must be a name"):
        ovseg.create_pipeline(config(), task="")
