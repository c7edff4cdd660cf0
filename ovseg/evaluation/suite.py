"""Benchmark suites: one method preset over several datasets, reported as a paper-style row.

``ovss8`` is the eight-benchmark table of the training-free open-vocabulary segmentation papers
(SCLIP, ClearCLIP, NACLIP), in their column order: VOC21, PC60, Object, VOC20, PC59, Stuff,
City, ADE. For a method preset ``P`` each benchmark ``b`` runs the preset ``P-b`` (the method's
published settings for that dataset) on the dataset found under the data root, in the folders
mmsegmentation's data-root convention uses::

    DATA_ROOT/
        VOCdevkit/VOC2012/        VOC21, VOC20   (PascalVOCDataset)
        VOCdevkit/VOC2010/        PC60, PC59     (PascalContextDataset)
        coco_object/ or coco_stuff164k/          Object (COCOObjectDataset)
        coco_stuff164k/           Stuff          (COCOStuffDataset)
        cityscapes/               City           (CityscapesDataset)
        ade/ADEChallengeData2016/ or ADEChallengeData2016/   ADE (ADE20KDataset)

A benchmark whose folder is absent is reported as missing, with the folder that was expected,
and left out of the average, which says how many benchmarks it covers; with none present the
run stops with a DatasetError. A folder that is present but laid out wrongly is an error before
anything runs (its reader names what is missing). Each benchmark writes ``results.json`` and
its resolved ``config.yaml`` to ``WORK_DIR/<benchmark>/``; the row goes to
``WORK_DIR/<suite>.json`` (written atomically).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovseg.config import load_config, resolve_config_path, to_container
from ovseg.data import (  # noqa: F401 - imported so that the suite's readers are registered
    ade20k,
    cityscapes,
    coco_object,
    coco_stuff,
    pascal_context,
    voc,
)
from ovseg.engine.dist import init_distributed
from ovseg.errors import ConfigError, DatasetError
from ovseg.evaluation.jsonio import json_float, write_json_atomic
from ovseg.evaluation.loop import evaluate
from ovseg.evaluation.table import render_table
from ovseg.registry import DATASETS


@dataclass(frozen=True)
class Benchmark:
    """One column of a suite.

    ``key`` is the preset suffix (``P-<key>``), ``title`` the column header, ``dataset`` the
    ``data.test`` config without ``root``, ``folders`` the sub-folders of the data root where the
    dataset may live (the first that exists is used), ``contents`` what that folder must hold.
    """

    key: str
    title: str
    dataset: dict[str, Any]
    folders: tuple[str, ...]
    contents: str = ""


VOC_CONTENTS = "JPEGImages/, SegmentationClass/, ImageSets/Segmentation/val.txt"
PC_CONTENTS = "JPEGImages/, SegmentationClassContext/, ImageSets/SegmentationContext/val.txt"
COCO_CONTENTS = "images/val2017/, annotations/val2017/"

OVSS8: tuple[Benchmark, ...] = (
    Benchmark(
        "voc21",
        "VOC21",
        {"type": "PascalVOCDataset", "split": "val", "num_classes": 21},
        ("VOCdevkit/VOC2012",),
        VOC_CONTENTS,
    ),
    Benchmark(
        "pc60",
        "PC60",
        {"type": "PascalContextDataset", "split": "val", "num_classes": 60},
        ("VOCdevkit/VOC2010",),
        PC_CONTENTS,
    ),
    Benchmark(
        "object",
        "Object",
        {"type": "COCOObjectDataset", "split": "val2017"},
        ("coco_object", "coco_stuff164k"),
        COCO_CONTENTS + " (*_instanceTrainIds.png or raw stuffthingmaps)",
    ),
    Benchmark(
        "voc20",
        "VOC20",
        {"type": "PascalVOCDataset", "split": "val", "num_classes": 20},
        ("VOCdevkit/VOC2012",),
        VOC_CONTENTS,
    ),
    Benchmark(
        "pc59",
        "PC59",
        {"type": "PascalContextDataset", "split": "val", "num_classes": 59},
        ("VOCdevkit/VOC2010",),
        PC_CONTENTS,
    ),
    Benchmark(
        "stuff",
        "Stuff",
        {"type": "COCOStuffDataset", "split": "val2017"},
        ("coco_stuff164k",),
        COCO_CONTENTS + " (*_labelTrainIds.png or raw stuffthingmaps)",
    ),
    Benchmark(
        "city",
        "City",
        {"type": "CityscapesDataset", "split": "val"},
        ("cityscapes",),
        "leftImg8bit/val/, gtFine/val/ (*_gtFine_labelTrainIds.png)",
    ),
    Benchmark(
        "ade",
        "ADE",
        {"type": "ADE20KDataset", "split": "validation"},
        ("ade/ADEChallengeData2016", "ADEChallengeData2016"),
        "images/validation/, annotations/validation/",
    ),
)

SUITES: dict[str, tuple[Benchmark, ...]] = {"ovss8": OVSS8}


def get_suite(name: str) -> tuple[Benchmark, ...]:
    """The benchmarks of suite ``name``; unknown names raise ConfigError listing the suites."""
    try:
        return SUITES[name]
    except KeyError:
        raise ConfigError(
            f"Unknown suite {name!r}; known suites: {', '.join(sorted(SUITES))}."
        ) from None


def find_dataset_folder(data_root: Path, benchmark: Benchmark) -> Path | None:
    """The first of the benchmark's folders under ``data_root`` that exists, else None."""
    for folder in benchmark.folders:
        if (data_root / folder).is_dir():
            return data_root / folder
    return None


def expected_location(data_root: Path, benchmark: Benchmark) -> str:
    """Where a benchmark's dataset was looked for, for the list of missing ones."""
    places = " or ".join(str(data_root / f) for f in benchmark.folders)
    return f"{places} with {benchmark.contents}" if benchmark.contents else places


def _benchmark_config(
    preset: str, benchmark: Benchmark, overrides: Sequence[str]
) -> dict[str, Any]:
    """The resolved config of preset ``<preset>-<key>`` (overrides applied) as a plain dict."""
    name = f"{preset}-{benchmark.key}"
    try:
        resolve_config_path(name)
    except ConfigError:
        raise ConfigError(
            f"The suite needs the preset {name!r} (the settings of {preset} for "
            f"{benchmark.title}), which does not exist. Give a method preset that has one "
            "preset per benchmark (ovseg list presets), e.g. sclip-vitb16."
        ) from None
    cfg = to_container(load_config(name, overrides))
    declared = cfg.get("benchmark")
    if declared not in (None, benchmark.key):
        raise ConfigError(
            f"Preset {name} declares benchmark {declared!r}, not {benchmark.key!r}; fix the preset."
        )
    return cfg


def _dataset_config(benchmark: Benchmark, folder: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """``data.test`` for a benchmark: its reader on ``folder``, classes from the preset's file."""
    dataset = {**benchmark.dataset, "root": str(folder)}
    vocabulary = cfg.get("vocabulary")
    if isinstance(vocabulary, dict) and vocabulary.get("file"):
        dataset["class_file"] = vocabulary["file"]
    return dataset


def format_row(
    benchmarks: Sequence[Benchmark], scores: dict[str, float | None], average: float | None
) -> str:
    """The paper-style table: one column per benchmark (mIoU, or ``missing``) and the average."""
    counted = sum(scores.get(b.key) is not None for b in benchmarks)
    header = [b.title for b in benchmarks] + [f"Avg ({counted}/{len(benchmarks)})"]
    cells: list[Any] = []
    for b in benchmarks:
        if b.key not in scores:
            cells.append("missing")
        else:
            cells.append("nan" if scores[b.key] is None else scores[b.key])
    cells.append("-" if average is None else average)
    return render_table(header, [cells])


def run_suite(
    suite: str,
    preset: str,
    data_root: str | Path,
    overrides: Iterable[str] = (),
    *,
    work_dir: str | Path | None = None,
    device: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run every benchmark of ``suite`` with ``preset`` on the datasets under ``data_root``.

    Args:
        suite: suite name (``ovss8``).
        preset: method preset; ``<preset>-<benchmark>`` must exist for every benchmark.
        data_root: the folder holding the datasets (see the module docstring).
        overrides: ``key=value`` overrides applied to every benchmark's preset.
        work_dir: output folder (default ``work_dirs/<suite>_<preset>``).
        device: ``cpu``, ``cuda`` ...
        limit: evaluate only the first ``limit`` images of each dataset (smoke runs).

    Returns:
        The document written to ``<work_dir>/<suite>.json``: ``suite, preset, data_root, limit,
        order, benchmarks {key: {title, mIoU, aAcc, mAcc, num_images, dataset_root, results}},
        missing {key: expected location}, average {mIoU, over, excluded}``.

    Raises:
        DatasetError: the data root does not exist, no dataset of the suite is present, or a
            present dataset is laid out wrongly.
        ConfigError: unknown suite, or a ``<preset>-<benchmark>`` preset is missing.
    """
    benchmarks = get_suite(suite)
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"Data root {root} does not exist or is not a folder. See datasets/README.md for "
            "the layout of the suite's data root."
        )
    overrides = list(overrides)
    configs = {b.key: _benchmark_config(preset, b, overrides) for b in benchmarks}
    folders = {b.key: find_dataset_folder(root, b) for b in benchmarks}
    missing = {b.key: expected_location(root, b) for b in benchmarks if folders[b.key] is None}
    present = [b for b in benchmarks if folders[b.key] is not None]
    if not present:
        lines = "\n".join(f"  {b.title}: {missing[b.key]}" for b in benchmarks)
        raise DatasetError(
            f"None of the {len(benchmarks)} datasets of suite {suite} is under {root}; "
            f"expected:\n{lines}\nSee datasets/README.md for how to obtain and lay them out."
        )
    # build (and so check) every present dataset before the first, possibly long, run
    datasets = {}
    for b in present:
        data_cfg = _dataset_config(b, folders[b.key], configs[b.key])
        configs[b.key]["data"] = {"test": data_cfg}
        try:
            datasets[b.key] = DATASETS.build(data_cfg)
        except DatasetError as exc:
            raise DatasetError(
                f"{b.title}: {folders[b.key]} exists but cannot be read as {data_cfg['type']}. "
                f"Fix it, or move it away to run the suite without {b.title}.\n{exc}"
            ) from exc

    out_dir = Path(work_dir or f"work_dirs/{suite}_{preset}")
    # under torchrun every rank evaluates a shard; only rank 0 prints and writes the row
    is_main = init_distributed(device or "cpu").is_main
    entries: dict[str, dict[str, Any]] = {}
    for b in present:
        bench_dir = out_dir / b.key
        if is_main:
            print(f"== {b.title}: {preset}-{b.key} on {folders[b.key]}", flush=True)
        results = evaluate(
            configs[b.key],
            work_dir=bench_dir,
            device=device,
            limit=limit,
            dataset=datasets[b.key],
        )
        entries[b.key] = {
            "title": b.title,
            "preset": f"{preset}-{b.key}",
            "mIoU": json_float(results["mIoU"]),
            "aAcc": json_float(results["aAcc"]),
            "mAcc": json_float(results["mAcc"]),
            "num_images": int(results["num_images"]),
            "dataset_root": str(folders[b.key]),
            "results": str(bench_dir / "results.json"),
        }

    scores = {key: entry["mIoU"] for key, entry in entries.items()}
    counted = [b.key for b in present if scores[b.key] is not None]
    average = sum(scores[k] for k in counted) / len(counted) if counted else None
    document = {
        "suite": suite,
        "preset": preset,
        "data_root": str(root),
        "limit": limit,
        "order": [b.key for b in benchmarks],
        "benchmarks": entries,
        "missing": missing,
        "average": {
            "mIoU": average,
            "over": counted,
            "excluded": [b.key for b in benchmarks if b.key not in counted],
        },
    }
    if is_main:
        print(f"\n{suite} mIoU, {preset}" + (f" (first {limit} images each)" if limit else ""))
        print(format_row(benchmarks, scores, average))
        if missing:
            print(f"missing ({len(missing)}, not in the average):")
            for b in benchmarks:
                if b.key in missing:
                    print(f"  {b.title}: expected {missing[b.key]}")
        path = write_json_atomic(out_dir / f"{suite}.json", document)
        print(f"suite results written to {path}", flush=True)
    return document
