"""The SAM benchmark run: every section times both sides and agrees on the packaged tiny SAM."""

from __future__ import annotations

import json

import pytest
import torch

from ovseg.benchmarks.sam_pipelines import format_markdown, run_sam_benchmark
from ovseg.commands.benchmark_sam import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    "num_images": 1,
    "points_per_side": 2,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "repeats": 1,
    "warmup": 0,
    "image_size": 64,
}


def test_every_section_runs_and_agrees_with_segment_anything():
    messages: list[str] = []
    result = run_sam_benchmark(**SMALL, log=messages.append)
    sections = result["sections"]
    assert set(sections) == {"encoder", "proposals", "referring", "instance"}
    assert set(result["speedup"]) == set(sections)
    for part in sections.values():
        assert part["reference_seconds"] > 0 and part["ovseg_seconds"] > 0
        assert part["speedup"] == pytest.approx(
            part["reference_seconds"] / part["ovseg_seconds"], rel=1e-2
        )
    # two images per encoder call against one at a time: float32 summation order only
    assert sections["encoder"]["max_feature_diff_relative"] < 1e-5
    assert sections["proposals"]["masks"] > 0
    assert sections["proposals"]["identical_masks"] == sections["proposals"]["masks"]
    assert sections["referring"]["mask_iou_min"] >= 0.999
    assert sections["instance"]["identical_instances"] == sections["instance"]["instances"]
    assert any("encoder: repeat 1/1 reference" in m for m in messages)  # progress
    table = format_markdown(result)
    assert "SamPredictor.set_image" in table and "instance" in table


def test_command_writes_json_with_speedups_and_refuses_a_missing_gpu(tmp_path, capsys):
    out = tmp_path / "sam.json"
    args = ["--sections", "encoder", "--images", "1", "--image-size", "64", "--repeats", "1"]
    assert main([*args, "--warmup", "0", "--quiet", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["speedup"]) == {"encoder"} and data["speedup"]["encoder"] > 0
    assert data["command"].startswith("python tools/benchmark_sam.py")
    assert main(["--sections", "nothing"]) == 2
    assert "sections are" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda"]) == 2
        assert "no usable CUDA GPU" in capsys.readouterr().err
