"""mmseg test pipelines and test datasets in ovseg terms: the resize, the reader, the benchmark.

Used by :mod:`ovseg.interop.mmengine_config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ovseg.errors import UnmappableConfigError
from ovseg.interop.mmseg_methods import refuse

DATALOADER_RUNTIME_KEYS = frozenset(
    {"batch_size", "num_workers", "persistent_workers", "sampler", "pin_memory", "drop_last"}
)
SAME_NAME_LABELS = frozenset(
    {"PascalVOCDataset", "PascalVOC20Dataset", "PascalContextDataset", "PascalContext60Dataset",
     "PascalContext59Dataset", "ADE20KDataset"}
)  # fmt: skip
# ProxyCLIP's vfm_model -> the proxy model its segmentor loads


@dataclass(frozen=True)
class DatasetSpec:
    """An mmseg dataset type: the ovseg reader, its fixed arguments, benchmark and layout."""

    reader: dict[str, Any]
    benchmark: str | None
    img_prefix: str  # the standard folders under data_root (``{split}`` filled in)
    ann_prefix: str
    split_file: str | None  # ``ann_file`` pattern, None when the split is a folder name
    splits: tuple[str, ...]


_VOC = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/{split}.txt")
_PC = ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext/{split}.txt")
_COCO = ("images/{split}", "annotations/{split}", None)
DATASETS_MMSEG: dict[str, DatasetSpec] = {
    "PascalVOCDataset": DatasetSpec(
        {"type": "PascalVOCDataset", "num_classes": 21}, "voc21", *_VOC, ("val", "train")
    ),
    "PascalVOC20Dataset": DatasetSpec(
        {"type": "PascalVOCDataset", "num_classes": 20}, "voc20", *_VOC, ("val", "train")
    ),
    "PascalContextDataset": DatasetSpec(
        {"type": "PascalContextDataset", "num_classes": 60}, "pc60", *_PC, ("val", "train")
    ),
    "PascalContext60Dataset": DatasetSpec(
        {"type": "PascalContextDataset", "num_classes": 60}, "pc60", *_PC, ("val", "train")
    ),
    "PascalContext59Dataset": DatasetSpec(
        {"type": "PascalContextDataset", "num_classes": 59}, "pc59", *_PC, ("val", "train")
    ),
    "COCOObjectDataset": DatasetSpec(
        {"type": "COCOObjectDataset"}, "object", *_COCO, ("val2017", "train2017")
    ),
    "COCOStuffDataset": DatasetSpec(
        {"type": "COCOStuffDataset"}, "stuff", *_COCO, ("val2017", "train2017")
    ),
    "CityscapesDataset": DatasetSpec(
        {"type": "CityscapesDataset"},
        "city",
        "leftImg8bit/{split}",
        "gtFine/{split}",
        None,
        ("val", "train"),
    ),  # fmt: skip
    # ProxyCLIP's 847- and 459-class sets, as detectron2's preparation scripts lay them out
    "ADE20K847Dataset": DatasetSpec(
        {"type": "ADE20K847Dataset"},
        None,
        "images_detectron2/{split}",
        "annotations_detectron2/{split}",
        "{split}.txt",
        ("validation", "training"),
    ),  # fmt: skip
    "PascalContext459Dataset": DatasetSpec(
        {"type": "PascalContextDataset", "num_classes": 459},
        None,
        "JPEGImages",
        "annotations_detectron2/pc459_{split}",
        "ImageSets/SegmentationContext/{split}.txt",
        ("val", "train"),
    ),  # fmt: skip
    "ADE20KDataset": DatasetSpec(
        {"type": "ADE20KDataset"},
        "ade",
        "images/{split}",
        "annotations/{split}",
        None,
        ("validation", "training"),
    ),  # fmt: skip
}


# ----------------------------------------------------------------------------- test pipeline
def resize_settings(transforms: Sequence[Mapping[str, Any]], source: str) -> tuple[int, int]:
    """``(short_side, max_long_side)`` of the test pipeline's keep-ratio ``Resize``."""
    found: tuple[int, int] | None = None
    for index, step in enumerate(transforms):
        kind = step.get("type")
        where = f"test_pipeline[{index}]"
        if kind in ("LoadImageFromFile", "PackSegInputs", "ImageToTensor", "Collect"):
            continue
        if kind in ("LoadAnnotations", "MyLoadAnnotations"):  # ProxyCLIP's, for 16-bit labels
            unknown = set(step) - {"type", "reduce_zero_label"}
            if unknown:
                raise refuse(source, where, dict(step), "LoadAnnotations with other options.")
            continue
        if kind == "MultiScaleFlipAug":  # mmseg 0.x wraps the test transforms
            scale = step.get("img_scale")
            if step.get("flip") or step.get("img_ratios") not in (None, [1.0], 1.0):
                raise refuse(
                    source, where, dict(step),
                    "ovseg tests one scale without flipping (no test-time augmentation).",
                )  # fmt: skip
            inner = [dict(t) for t in step.get("transforms", [])]
            for t in inner:
                if t.get("type") == "Resize":
                    t.setdefault("scale", scale)
            found = resize_settings(inner, source)
            continue
        if kind == "Normalize" or kind == "RandomFlip" and not step.get("prob"):
            continue  # the segmentor normalises; a flip with prob 0 never flips
        if kind != "Resize":
            raise refuse(
                source, where, dict(step),
                "ovseg's test pipeline is load -> keep-ratio resize -> model; this transform "
                "has no equivalent.",
            )  # fmt: skip
        unknown = set(step) - {"type", "scale", "img_scale", "keep_ratio"}
        if unknown or not step.get("keep_ratio"):
            raise refuse(
                source, where, dict(step), "only Resize(scale=(long, short), keep_ratio=True)."
            )
        scale = step.get("scale", step.get("img_scale"))
        if (
            not isinstance(scale, (list, tuple))
            or len(scale) != 2
            or not all(isinstance(s, int) and s > 0 for s in scale)
        ):
            raise refuse(source, f"{where}.scale", scale, "expected two positive integers.")
        # mmcv's keep-ratio rescale: long side <= max(scale), short side <= min(scale)
        found = (min(scale), max(scale))
    if found is None:
        raise UnmappableConfigError(
            f"{source}: the test pipeline has no Resize(scale=..., keep_ratio=True); ovseg needs "
            "the short side the method was evaluated at."
        )
    return found


# ----------------------------------------------------------------------------- dataset
def dataset_section(
    cfg: Mapping[str, Any], source: str, load_reduce: bool = False
) -> tuple[dict[str, Any] | None, Any]:
    """``(data.test reader config or None when data_root is empty, benchmark key)``;
    ``load_reduce``: the test pipeline's LoadAnnotations reduces zero labels."""
    loader = cfg.get("test_dataloader")
    legacy = cfg.get("data", {}).get("test") if isinstance(cfg.get("data"), Mapping) else None
    if loader is not None:
        unknown = set(loader) - DATALOADER_RUNTIME_KEYS - {"dataset"}
        if unknown:
            key = sorted(unknown)[0]
            raise refuse(source, f"test_dataloader.{key}", loader[key], "no ovseg equivalent.")
        dataset = dict(loader.get("dataset") or {})
        img_prefix = (dataset.get("data_prefix") or {}).get("img_path", "")
        ann_prefix = (dataset.get("data_prefix") or {}).get("seg_map_path", "")
        split_file = dataset.get("ann_file") or None
        known = {"type", "data_root", "data_prefix", "ann_file", "pipeline",
                 "reduce_zero_label", "test_mode", "img_suffix", "seg_map_suffix"}  # fmt: skip
    elif legacy is not None:
        dataset = dict(legacy)
        img_prefix, ann_prefix = dataset.get("img_dir", ""), dataset.get("ann_dir", "")
        split_file = dataset.get("split") or None
        known = {"type", "data_root", "img_dir", "ann_dir", "split", "pipeline",
                 "reduce_zero_label", "test_mode", "img_suffix", "seg_map_suffix"}  # fmt: skip
    else:
        raise UnmappableConfigError(
            f"{source}: no test_dataloader (mmseg 1.x) or data.test (0.x) section; ovseg needs "
            "the test dataset to know the benchmark."
        )
    for key in dataset:
        if key not in known:
            raise refuse(source, f"dataset.{key}", dataset[key], "no ovseg equivalent.")
    type_ = dataset.get("type", cfg.get("dataset_type"))
    spec = DATASETS_MMSEG.get(type_)
    root = dataset.get("data_root", cfg.get("data_root")) or ""
    if spec is None:
        raise refuse(
            source, "dataset.type", type_,
            f"ovseg reads {', '.join(sorted(DATASETS_MMSEG))} (or a folder dataset).",
        )  # fmt: skip
    standard = None  # the split whose standard folders the config names, if any
    for split in spec.splits:
        expected = (
            spec.img_prefix.format(split=split),
            spec.ann_prefix.format(split=split),
            spec.split_file.format(split=split) if spec.split_file else None,
        )
        if (img_prefix.rstrip("/"), ann_prefix.rstrip("/"), split_file) == expected:
            standard = split
            break
    # the benchmark is the standard evaluation split (the first listed) of the standard layout
    benchmark = spec.benchmark if standard == spec.splits[0] else None
    if not root:
        return None, benchmark  # the reference configs leave data_root for the user
    if standard is not None:
        return {**spec.reader, "root": str(root), "split": standard}, benchmark
    suffix = dataset.get("seg_map_suffix", ".png")
    if split_file or type_ not in SAME_NAME_LABELS or suffix != ".png":
        raise refuse(
            source, "dataset folders", (img_prefix, ann_prefix, split_file),
            f"{type_} in ovseg reads its standard layout "
            f"({spec.img_prefix}, {spec.ann_prefix}, {spec.split_file or 'no split file'}); "
            "other folders are read only where each label is <image name>.png, without a split "
            "file.",
        )  # fmt: skip
    # images and label maps in other folders, paired by file name: ovseg's folder reader
    reduce = bool(dataset.get("reduce_zero_label", False) or load_reduce)
    return (
        {"type": "FolderDataset", "root": str(root), "images": img_prefix,
         "labels": ann_prefix, "reduce_zero_label": reduce},
        None,
    )  # fmt: skip
