"""Fixtures of the demo tests: the embedded shapes-tiny pipeline, a config with every task on
tiny random models, examples, a served app."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

# Before anything imports gradio: no version check, analytics or hub telemetry.
for _name, _value in {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}.items():
    os.environ.setdefault(_name, _value)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "demo" / "examples"

TINY_VOCABULARY = ["red star", "blue ring", "water", "wall"]
DATABASE_NAMES = [*TINY_VOCABULARY, "sand", "green square", "yellow disc", "sky", "grass"]
# segment-anything's generator on a 4 x 4 point grid, keeping every mask: fast, and varied
# enough that the pipeline's own thresholds and NMS have something to do
TINY_PROPOSALS = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
}


@pytest.fixture(scope="module")
def shapes_tiny(one_torch_thread):
    import ovseg

    return ovseg.create_pipeline("shapes-tiny")


@pytest.fixture(scope="session")
def tiny_task_config(tiny_model_names, tmp_path_factory) -> dict:
    """A config with a pipeline for every demo task on tiny random models saved to files.

    ``pipeline`` (semantic), ``pipelines.referring`` and ``pipelines.instance`` share one tiny
    random CLIP checkpoint; the two SAM pipelines load one tiny random SAM checkpoint
    (``decoder: {type: SamDecoder, model_type: <architecture fields>, checkpoint: PATH}``);
    ``database:`` is a text database of :data:`DATABASE_NAMES` built with the same CLIP
    weights, so the vocabulary-free pipeline accepts it; ``pipelines.reasoning`` is a tiny
    scripted READ folder that answers every question with ``"Sure [SEG] ."``.
    """
    import torch

    from ovseg.cased.build import build_database
    from ovseg.models.backbones.clip import ClipBackbone
    from ovseg.weights import save_state_dict
    from tests.conftest import randomize_
    from tests.models.decoders.sam_tiny import TINY_SAM, tiny_sam
    from tests.models.multimodal.read_tiny import write_tiny_release

    folder = tmp_path_factory.mktemp("tiny_tasks")
    backbone_args = {
        "model_name": tiny_model_names["vit"],
        "dense_mode": "sclip",
        "templates": "photo",
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clip = ClipBackbone(**backbone_args)
        randomize_(clip.model, seed=5)  # distinct text embeddings: the search has a ranking
        clip_path = save_state_dict(clip.model.state_dict(), folder / "clip.safetensors")
        sam_path = save_state_dict(tiny_sam().state_dict(), folder / "sam.safetensors")
        backbone = {"type": "ClipBackbone", **backbone_args, "checkpoint": str(clip_path)}
        clip = ClipBackbone(**{**backbone_args, "checkpoint": str(clip_path)})
        (folder / "names.txt").write_text("\n".join(DATABASE_NAMES) + "\n")
        database = build_database(
            folder / "names.txt", clip, folder / "db", kind="concepts", progress=False
        )
        (folder / "read").mkdir()
        release = write_tiny_release(folder / "read")
    finally:
        torch.set_num_threads(threads)
    decoder = {"type": "SamDecoder", "model_type": dict(TINY_SAM), "checkpoint": str(sam_path)}
    whole_image = {"short_side": None, "max_long_side": None}
    return {
        "pipeline": {
            "type": "SemanticSegmenter",
            "backbone": backbone,
            "logit_scale": 40.0,
            "inference": {"mode": "slide", "crop_size": 32, "stride": 16},
        },
        "vocabulary": list(TINY_VOCABULARY),
        "pipelines": {
            "referring": {
                "type": "ReferringSegmenter",
                "backbone": backbone,
                "decoder": decoder,
                "selector": {"type": "SasPSelector", "num_points": 5},
                "inference": whole_image,
            },
            "instance": {
                "type": "InstanceSegmenter",
                "backbone": backbone,
                "decoder": decoder,
                "inference": whole_image,
                "proposals": dict(TINY_PROPOSALS),
                "postprocess": {"score_threshold": 0.05, "nms_mode": "mask"},
            },
            "reasoning": yaml.safe_load(release["config"].read_text())["pipelines"]["reasoning"],
        },
        # names embedded alike by a random text tower: no de-duplication, keep every name
        "database": {"path": str(database), "k": 5, "dedup_threshold": 1.5},
        "vocab_free": {"min_score": 0.0, "max_names": 4},
    }


@pytest.fixture(scope="module")
def tiny_provider(tiny_task_config, one_torch_thread):
    """The default :class:`PipelineProvider` over :func:`tiny_task_config` (pipelines built on
    first use, once per test module)."""
    from ovseg.demo.handlers import PipelineProvider

    return PipelineProvider(tiny_task_config)


@pytest.fixture(scope="module")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """A function returning a TCP port free on 127.0.0.1 right now."""
    return _free_port


@contextlib.contextmanager
def _served_demo(settings, pipeline, files_root: Path, provider=None) -> Iterator[tuple]:
    """Serve the demo app around ``pipeline`` (every task gets it) or ``provider`` in a
    background thread; yields (demo, ctx, url)."""
    from ovseg.demo.app import build_demo, create_context, launch_demo
    from ovseg.demo.handlers import PipelineProvider, SessionFiles

    ctx = create_context(
        "shapes-tiny",
        examples_dir=settings.examples_dir,
        concurrency=settings.concurrency,
        provider=provider or PipelineProvider("shapes-tiny", factory=lambda *_: pipeline),
        files=SessionFiles(files_root),
    )
    demo = build_demo(ctx, queue_size=settings.queue_size)
    _, url = launch_demo(demo, settings, block=False)
    try:
        yield demo, ctx, url
    finally:
        demo.close()
        ctx.files.close()


@pytest.fixture(scope="session")
def served_demo():
    """``served_demo(settings, pipeline, files_root, provider=None)``: a context manager serving
    the app around ``pipeline`` (or ``provider``) in a background thread; it yields
    ``(demo, context, url)``."""
    return _served_demo
