"""Evaluate vocabulary-free recognition on held-out synthetic scenes: names searched vs given.

Classification (per object crop of the COCO-layout annotations): top-1 CaSED name with the
vocabulary unknown, against CLIP zero-shot over the true class list; both scored with CaSED's
metrics (cluster accuracy, semantic similarity, semantic IoU) plus exact-name accuracy.
Per image, the fast route's vocabulary is compared with the classes present (recall and
precision of exact names). Segmentation (ADE20K layout): the vocabulary-free pipeline (fast and/or
dense route) against the same segmenter given the true vocabulary; mIoU after one-to-one
matching of names to classes for both, and the plain mIoU of the given-vocabulary run.

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


def classification(search, backbone, class_names, crops, similarity: bool) -> dict[str, Any]:
    from ovseg.evaluation.vocab_free import classification_report
    from ovseg.io import read_image

    text = backbone.encode_text(class_names).cpu()
    free, given, targets = [], [], []
    for crop in tqdm(crops, desc="classify crops"):
        embedding = search.embed_regions(read_image(crop["image"]), boxes=[crop["box"]])
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


def segmentation(pipelines: dict[str, Any], segmenter, dataset, num: int) -> dict[str, Any]:
    from ovseg.evaluation.semseg import SemSegMetric
    from ovseg.evaluation.vocab_free import VocabFreeSegMetric

    names = dataset.class_names
    count = min(num, len(dataset)) if num else len(dataset)
    matched = {mode: VocabFreeSegMetric(names) for mode in pipelines}
    matched["vocabulary_given"] = VocabFreeSegMetric(names)
    plain = SemSegMetric(num_classes=len(names), class_names=names)
    recall, precision, seconds = [], [], {mode: 0.0 for mode in pipelines}
    for i in tqdm(range(count), desc="segment scenes"):
        sample = dataset[i]
        image, label = sample["image"], sample["label"]
        result = segmenter(image, names)
        plain.process(result.sem_seg, label)
        matched["vocabulary_given"].process(result.sem_seg, names, label)
        present = {names[c] for c in np.unique(label) if c != dataset.ignore_index}
        for mode, pipeline in pipelines.items():
            start = time.perf_counter()
            found = pipeline(image)
            seconds[mode] += time.perf_counter() - start
            matched[mode].process(found.sem_seg, found.class_names, label)
            if mode == "fast":
                chosen = set(found.class_names)
                recall.append(len(chosen & present) / max(1, len(present)))
                precision.append(len(chosen & present) / max(1, len(chosen)))
    out: dict[str, Any] = {"num_scenes": count, "vocabulary_given_mIoU": plain.compute()["mIoU"]}
    for mode, metric in matched.items():
        summary = metric.compute()
        out[f"{mode}_matched_mIoU"] = summary["mIoU"]
        out[f"{mode}_num_names"] = summary["num_predicted_names"]
    for mode in pipelines:
        out[f"{mode}_seconds_per_scene"] = seconds[mode] / max(1, count)
    if recall:
        out["fast_vocabulary_recall"] = 100 * float(np.mean(recall))
        out["fast_vocabulary_precision"] = 100 * float(np.mean(precision))
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
    }  # fmt: skip
    dataset = ADE20KDataset(data, "validation")
    if "classification" in tasks:
        crops = object_crops(data / "coco", args.num)
        report["classification"] = classification(
            search, segmenter.backbone, dataset.class_names, crops, not args.no_similarity
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
