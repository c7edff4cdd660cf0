"""Evaluate vocabulary-free recognition on held-out synthetic scenes: names searched vs given.

Classification (per object crop of the COCO-layout annotations): top-1 CaSED name with the
vocabulary unknown, against CLIP zero-shot over the true class list; both scored with CaSED's
metrics (cluster accuracy, semantic similarity, semantic IoU) plus exact-name accuracy.
Segmentation (ADE20K layout), through the evaluation loop: the vocabulary-free pipeline (fast
and/or dense route) scored by ``VocabFreeEvaluator`` (mIoU after one-to-one matching of names to
classes, CaSED's metrics on the name of each true region, recall and precision of the exact names
found per image), against the same segmenter given the true vocabulary (matched and plain mIoU).
``ovseg eval`` runs the same evaluator on a config with ``evaluation: {type: VocabFreeEvaluator}``.

Example (the embedded preset on the first 20 validation scenes)::

    python tools/eval_vocab_free.py --data data/synth --preset shapes-tiny --db shapes-tiny \
        --num 20 --out work_dirs/vocab_free_shapes_tiny
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
from tqdm import tqdm


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", default="data/synth", help="folder holding coco/ and ADEChallengeData2016/"
    )
    p.add_argument("--preset", default="shapes-tiny")
    p.add_argument("--db", default=None, help="database folder (default: the preset's)")
    p.add_argument("--num", type=int, default=20, help="validation scenes to use (0: all)")
    p.add_argument("--tasks", default="classification,segmentation")
    p.add_argument("--modes", default="fast", help="segmentation routes: fast,dense")
    p.add_argument("--k", type=int, help="texts retrieved (default: the preset's or 10)")
    p.add_argument("--max-ngram", type=int, help="1 (CaSED) or 2 (two-word names)")
    p.add_argument("--min-score", type=float, default=None, help="fast route name threshold")
    p.add_argument("--no-similarity", action="store_true", help="skip the sentence-model metric")
    p.add_argument(
        "--crop-context",
        type=float,
        default=None,
        help="embed each object as a square crop this many times its box's longer side, with "
        "its surroundings (MaskedCropClassifier, mask_background false); default: CaSED's "
        "region crop (the box, resized and centre-cropped)",
    )
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="folder for results.json")
    return p.parse_args(argv)


def object_crops(coco_dir: Path, num: int) -> list[dict[str, Any]]:
    """``[{image, box (XYXY), name}]`` for the objects of the first ``num`` val images."""
    data = json.loads((coco_dir / "annotations" / "instances_val.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    images = sorted(data["images"], key=lambda im: im["id"])
    images = images[:num] if num else images
    files = {im["id"]: coco_dir / "val" / im["file_name"] for im in images}
    crops = []
    for ann in sorted(data["annotations"], key=lambda a: a["id"]):
        if ann["image_id"] in files and not ann.get("iscrowd"):
            x, y, w, h = ann["bbox"]
            crops.append({"image": files[ann["image_id"]], "box": [x, y, x + w, y + h],
                          "name": names[ann["category_id"]]})  # fmt: skip
    return crops


def classification(
    search, backbone, class_names, crops, similarity: bool, crop_context: float | None = None
) -> dict[str, Any]:
    from ovseg.evaluation.vocab_free import classification_report
    from ovseg.io import read_image
    from ovseg.models.classifiers import MaskedCropClassifier, embed_box_crops

    text = backbone.encode_text(class_names).cpu()
    cropper = (
        None
        if crop_context is None
        else MaskedCropClassifier(context_scale=crop_context, mask_background=False)
    )
    free, given, targets = [], [], []
    for crop in tqdm(crops, desc="classify crops"):
        image = read_image(crop["image"])
        if cropper is None:
            embedding = search.embed_regions(image, boxes=[crop["box"]])
        else:
            box = np.asarray([crop["box"]], dtype=np.float64)
            embedding = embed_box_crops(cropper, image, box, backbone)
        free.append(search.search_embeddings(embedding)[0].best)
        given.append(class_names[int((F.normalize(embedding, dim=-1) @ text.T).argmax())])
        targets.append(crop["name"])
    return {
        "vocabulary_unknown": classification_report(free, targets, similarity=similarity),
        "vocabulary_given": classification_report(given, targets, similarity=similarity),
        "examples": [
            {"target": t, "searched": f, "given": g}
            for t, f, g in list(zip(targets, free, given))[:15]
        ],  # fmt: skip
    }


class Timed:
    """A pipeline that adds up the seconds its calls take."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline, self.seconds = pipeline, 0.0

    def __call__(self, image: np.ndarray) -> Any:
        start = time.perf_counter()
        try:
            return self.pipeline(image)
        finally:
            self.seconds += time.perf_counter() - start


def segmentation(pipelines: dict[str, Any], segmenter, dataset, num: int) -> dict[str, Any]:
    """The evaluation loop per route (VocabFreeEvaluator) and for the given vocabulary (plain
    mIoU with SemSegEvaluator, matched mIoU with VocabFreeEvaluator)."""
    from ovseg.evaluation.loop import run_evaluation
    from ovseg.evaluation.semseg_evaluator import SemSegEvaluator
    from ovseg.evaluation.vocab_free_evaluator import VocabFreeEvaluator

    names = list(dataset.class_names)
    count = min(num, len(dataset)) if num else len(dataset)
    indices = range(count)

    def given(image: np.ndarray) -> Any:
        return segmenter(image, names)

    def score(evaluator: Any, pipeline: Any) -> dict[str, Any]:
        return run_evaluation(evaluator, dataset, pipeline, indices=indices, show=False)

    plain = score(SemSegEvaluator(names, dataset.ignore_index), given)
    out: dict[str, Any] = {"num_scenes": count, "vocabulary_given_mIoU": plain["mIoU"]}
    runs = {mode: Timed(pipeline) for mode, pipeline in pipelines.items()}
    runs["vocabulary_given"] = given
    for mode, pipeline in runs.items():
        found = score(VocabFreeEvaluator(names, dataset.ignore_index), pipeline)
        out[f"{mode}_matched_mIoU"] = found["matched_mIoU"]
        out[f"{mode}_num_names"] = found["num_predicted_names"]
        if mode in pipelines:
            out[f"{mode}_seconds_per_scene"] = pipeline.seconds / max(1, count)
            out[f"{mode}_vocabulary_recall"] = found["vocabulary_recall"]
            out[f"{mode}_vocabulary_precision"] = found["vocabulary_precision"]
            out[f"{mode}_naming"] = found["naming"]
    return out


def main(argv: list[str] | None = None) -> int:
    from ovseg.api import build_vocab_free_pipeline
    from ovseg.data.ade20k import ADE20KDataset
    from ovseg.pipelines.vocab_free import VocabFreeSegmenter

    args = parse_args(argv)
    search_options = {k: v for k, v in (("k", args.k), ("max_ngram", args.max_ngram)) if v}
    pipe_options = {} if args.min_score is None else {"min_score": args.min_score}
    fast = build_vocab_free_pipeline(args.preset, args.db, args.device, search=search_options,
                                     **pipe_options)  # fmt: skip
    segmenter, search = fast.segmenter, fast.search
    data = Path(args.data)
    tasks = set(args.tasks.split(","))
    report: dict[str, Any] = {
        "preset": args.preset, "database": str(search.database.path),
        "database_size": len(search.database), "k": search.k, "alpha": search.alpha,
        "max_ngram": getattr(search.extractor, "max_ngram", None), "num": args.num,
        "crop_context": args.crop_context,
    }  # fmt: skip
    dataset = ADE20KDataset(data, "validation")
    if "classification" in tasks:
        crops = object_crops(data / "coco", args.num)
        report["classification"] = classification(
            search,
            segmenter.backbone,
            dataset.class_names,
            crops,
            not args.no_similarity,
            args.crop_context,
        )
    if "segmentation" in tasks:
        pipelines = {}
        for mode in args.modes.split(","):
            pipelines[mode] = fast if mode == "fast" else VocabFreeSegmenter(
                segmenter, search, mode=mode, **pipe_options)  # fmt: skip
        report["segmentation"] = segmentation(pipelines, segmenter, dataset, args.num)
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.out:
        from ovseg.fileio import atomic_write_text

        atomic_write_text(Path(args.out) / "results.json", text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
