"""The SAM proposals benchmark: both generators run and agree on the packaged small SAM."""

from __future__ import annotations

from ovseg.benchmarks.sam import format_markdown, run_proposals_benchmark


def test_generators_agree_and_the_report_names_both(one_torch_thread):
    result = run_proposals_benchmark(
        num_images=1, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
        repeats=1,
    )  # fmt: skip
    assert result["masks"] > 0 and result["identical_masks"] == result["masks"]
    assert result["speedup"] > 0 and result["machine"]["torch_threads"] >= 1
    table = format_markdown(result)
    assert "SamAutomaticMaskGenerator" in table and "SamDecoder.generate" in table
