"""Throughput of the semantic pipeline against a naive re-creation of the reference inference loop.

Two ways to segment the same images with the same open_clip model object and the same text
features:

* **naive baseline** (:class:`NaiveSlidingSegmenter`): what the reference code of SCLIP /
  ClearCLIP / NACLIP does in ``forward_slide``. Per image: resize, normalise, then one window at
  a time (a batch of 1, fp32, under ``torch.no_grad``): run the ViT with the modified last block,
  normalise the tokens, cosine with the text features, reshape to the token grid, upsample to the
  crop, zero-pad to the image and add into a sum map while a count map records the overlap; then
  divide, upsample to the original size, scale, softmax and argmax. Text features are computed
  once up front, one class at a time over all templates, as the reference does at init.
* **ovseg**: :func:`ovseg.create_pipeline` with a mapping config and
  :meth:`SemanticSegmenter.predict_batch` over the whole image list (windows of many images share
  backbone batches).

:func:`run_benchmark` warms both up, times ``repeats`` interleaved runs over all images (median),
then checks that both give the same labels: the score maps (cosine, ``(Q, H, W)`` at input size)
must agree to ``score_tol``, and a pixel may only get a different label where the two classes'
baseline scores are within twice the measured score difference (a float tie). The result is a
JSON-ready dict; :func:`format_markdown` renders it for humans; the command line
(``tools/benchmark.py``) is :mod:`ovseg.commands.benchmark`.

Modules: ``inputs`` (images, names, config), ``baseline`` (the naive loop and the output
comparison), ``machine``, ``runner`` (timing and agreement), ``report``; ``sam_pipelines``
holds the SAM benchmarks of ``tools/benchmark_sam.py`` (image encoder, proposals, referring and
instance pipelines against segment-anything), ``sam`` the proposals-only comparison;
``read_query`` (seconds per reasoning query of a READ-7B-shaped model) and ``detect_segment``
(OWLv2 boxes segmented by SAM, per image) time large random-init models for
``tools/benchmark_models.py``, without a reference to compare with.
"""

from __future__ import annotations

from ovseg.benchmarks.baseline import NaiveSlidingSegmenter, compare_outputs
from ovseg.benchmarks.inputs import (
    DEFAULT_SIZES,
    benchmark_config,
    parse_size,
    synthetic_images,
    vocabulary_names,
)
from ovseg.benchmarks.machine import machine_info, peak_rss_mb
from ovseg.benchmarks.report import format_markdown, write_json
from ovseg.benchmarks.runner import BenchmarkSettings, check_agreement, run_benchmark

__all__ = [
    "DEFAULT_SIZES",
    "BenchmarkSettings",
    "NaiveSlidingSegmenter",
    "benchmark_config",
    "check_agreement",
    "compare_outputs",
    "format_markdown",
    "machine_info",
    "parse_size",
    "peak_rss_mb",
    "run_benchmark",
    "synthetic_images",
    "vocabulary_names",
    "write_json",
]
