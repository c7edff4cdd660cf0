"""The throughput benchmark: both paths run, agree, and the checker catches real disagreement."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch

from ovseg.api import create_pipeline
from ovseg.benchmarks import (
    NaiveSlidingSegmenter,
    benchmark_config,
    check_agreement,
    compare_outputs,
    parse_size,
    run_benchmark,
    synthetic_images,
    vocabulary_names,
)
from ovseg.commands.benchmark import main
from ovseg.errors import ConfigError
from ovseg.models.backbones.templates import resolve_templates
from ovseg.vocab import Vocabulary

# 2 small images: 40x56 resizes to 48x67 (2x4 windows of 32, stride 16), 72x48 stays (4x2).
TINY = {
    "num_images": 2,
    "sizes": [(40, 56), (72, 48)],
    "short_side": 48,
    "max_long_side": None,
    "crop": 32,
    "stride": 16,
    "batch_size": 4,
    "num_classes": 4,
    "templates": "photo",
    "repeats": 1,
    "warmup": 1,
    "threads": 1,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_run_benchmark_tiny_vit(tiny_model_names):
    result = run_benchmark(tiny_model_names["vit"], "sclip", **TINY)

    for key in ("baseline", "ovseg"):
        assert result[key]["images_per_second"] > 0
        assert len(result[key]["seconds_all"]) == 1
        assert len(result[key]["cpu_seconds_all"]) == 1 and result[key]["cpu_seconds_median"] > 0
    assert result["cpu_time_speedup"] == pytest.approx(
        result["baseline"]["cpu_seconds_median"] / result["ovseg"]["cpu_seconds_median"], rel=1e-2
    )
    assert result["speedup"] == pytest.approx(
        result["ovseg"]["images_per_second"] / result["baseline"]["images_per_second"], rel=1e-2
    )
    check = result["check"]
    # The baseline runs the windows one by one, ovseg batches them: the same float32 arithmetic
    # in another order. Cosine scores are O(1) (64-term sums): ~1e-7 apart, bound 1e-5. Labels
    # may differ only where two classes' scores tie within that difference (counted as
    # "explained"; none on the test machines), never elsewhere.
    assert check["max_abs_score_diff"] < 1e-5
    assert check["unexplained_mismatches"] == 0
    assert check["mismatched_pixels"] <= 0.001 * check["total_pixels"]
    assert check["total_pixels"] == 40 * 56 + 72 * 48
    assert result["settings"]["windows_total"] == 8 + 8
    assert result["machine"]["torch"] == torch.__version__
    json.dumps(result)  # JSON-ready


def _pipeline_and_baseline(model_name: str, pipeline_mode: str, baseline_mode: str):
    vocab = Vocabulary.create(vocabulary_names(4))
    config = benchmark_config(
        model_name,
        pipeline_mode,
        short_side=48,
        max_long_side=None,
        crop=32,
        stride=16,
        batch_size=4,
        templates="photo",
        logit_scale=40.0,
        device="cpu",
    )
    torch.manual_seed(1)
    pipeline = create_pipeline(config, vocabulary=vocab)
    backbone = pipeline.backbone
    baseline = NaiveSlidingSegmenter(
        backbone.model,
        open_clip.get_tokenizer(model_name),
        vocab.names,
        resolve_templates("photo"),
        backbone.mean.flatten().tolist(),
        backbone.std.flatten().tolist(),
        dense_mode=baseline_mode,
        short_side=48,
        max_long_side=None,
        crop=32,
        stride=16,
        logit_scale=40.0,
    )
    return pipeline, baseline, vocab


def test_check_agreement_catches_a_different_computation(tiny_model_names):
    images = synthetic_images(1, [(40, 56)], seed=3)
    pipeline, baseline, vocab = _pipeline_and_baseline(tiny_model_names["vit"], "sclip", "sclip")
    assert check_agreement(pipeline, baseline, images, vocab)["labels_equal"]

    pipeline, baseline, vocab = _pipeline_and_baseline(tiny_model_names["vit"], "sclip", "vanilla")
    with pytest.raises(AssertionError, match="do not compute the same thing"):
        check_agreement(pipeline, baseline, images, vocab)


def test_compare_outputs_tells_ties_from_real_mismatches():
    scores = torch.tensor([[[0.50, 0.20]], [[0.50 - 1e-8, 0.10]]])  # (Q=2, H=1, W=2)
    ours = torch.tensor([[1, 0]])  # pixel 0 is a tie, pixel 1 agrees
    result = compare_outputs(scores, torch.tensor([[0, 0]]), scores, ours)
    assert result == {
        "max_abs_score_diff": 0.0,
        "mismatched_pixels": 1,
        "unexplained_mismatches": 0,
    }
    result = compare_outputs(scores, torch.tensor([[0, 0]]), scores, torch.tensor([[0, 1]]))
    assert result["unexplained_mismatches"] == 1  # 0.20 vs 0.10 is no tie


def test_synthetic_images_are_seeded_and_sized():
    first = synthetic_images(3, [(20, 30), (25, 10)], seed=5)
    again = synthetic_images(3, [(20, 30), (25, 10)], seed=5)
    assert [im.shape for im in first] == [(20, 30, 3), (25, 10, 3), (20, 30, 3)]
    assert all(im.dtype == np.uint8 for im in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], synthetic_images(1, [(20, 30)], seed=6)[0])


def test_vocabulary_names_and_sizes():
    names = vocabulary_names(160)
    assert len(names) == len(set(names)) == 160 and names[-1] == "class 159"
    assert parse_size("480x640") == (480, 640)
    with pytest.raises(ConfigError):
        parse_size("480")
    with pytest.raises(ConfigError):
        vocabulary_names(0)


def test_main_prints_table_and_writes_json(tiny_model_names, tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    argv = [
        "--model", tiny_model_names["vit"], "--mode", "naclip", "--images", "1",
        "--sizes", "40x56", "--short-side", "48", "--crop", "32", "--stride", "16",
        "--batch-size", "8", "--classes", "3", "--templates", "photo", "--repeats", "2",
        "--warmup", "0", "--threads", "1", "--quiet", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| naive baseline" in table and "ovseg / baseline" in table
    data = json.loads(out.read_text())
    assert data["settings"]["dense_mode"] == "naclip"
    assert len(data["ovseg"]["seconds_all"]) == 2
    assert data["machine"]["torch_threads"] == 1
    assert data["command"].startswith("python tools/benchmark.py --model")
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # no temporary left


def test_main_reports_bad_settings(capsys):
    assert main(["--images", "0", "--quiet"]) == 2
    assert "num_images must be positive" in capsys.readouterr().err


def test_bf16_ovseg_against_fp32_baseline_reports_agreement(tiny_model_names):
    result = run_benchmark(tiny_model_names["vit"], "sclip", precision="bf16", **TINY)
    check = result["check"]
    assert result["settings"]["precision"] == "bf16"
    assert 0.0 < check["label_agreement"] <= 1.0
    assert check["max_abs_score_diff"] > 0  # bf16 really ran: scores are not bit-identical
