"""Every registered component: built from a tiny config and called once, or tested elsewhere.

``BUILDS`` maps ``(registry kind, name)`` to a check that builds the component through its
registry and runs one call. What needs more than a tiny config (a dataset folder, a trained
database, a SAM and a CLIP together) is listed in ``ELSEWHERE`` with the test that builds it on
a tiny fixture. A component registered in neither table fails ``test_every_component_is_covered``,
so a new one cannot slip in untested.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import ovseg
from ovseg.components import load_all
from ovseg.models.prompts import GridPlacement
from ovseg.registry import (
    _ALL_REGISTRIES,
    BACKBONES,
    DATASETS,
    EVALUATORS,
    MASK_DECODERS,
    NECKS,
    POINT_SELECTORS,
    TRANSFORMS,
)
from ovseg.structures import PointPrompts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN_KINDS = (
    "backbone",
    "dataset",
    "detector",
    "evaluator",
    "mask_classifier",
    "mask_decoder",
    "neck",
    "pipeline",
    "point_selector",
    "task",
    "transform",
    "vocab_source",
)


def _sample(height: int = 40, width: int = 48) -> dict:
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "label": rng.integers(0, 3, (height, width)).astype(np.int64),
    }


def _transform(cfg: dict, check: Callable[[dict, dict], None]) -> Callable[[dict], None]:
    def run(_names: dict) -> None:
        sample = _sample()
        out = TRANSFORMS.build(cfg)({k: v.copy() for k, v in sample.items()})
        image, label = out["image"], out["label"]
        spatial = tuple(image.shape[-2:]) if isinstance(image, torch.Tensor) else image.shape[:2]
        assert tuple(label.shape[-2:]) == spatial  # image and label stay aligned
        check(sample, out)

    return run


def _shape(height: int, width: int) -> Callable[[dict, dict], None]:
    def check(_sample: dict, out: dict) -> None:
        assert out["image"].shape == (height, width, 3)

    return check


def _flipped(sample: dict, out: dict) -> None:
    np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1])
    np.testing.assert_array_equal(out["label"], sample["label"][:, ::-1])


def _flipped_tensor(sample: dict, out: dict) -> None:
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), sample["image"][:, ::-1])


def _padded(sample: dict, out: dict) -> None:
    assert out["image"].shape == (64, 64, 3)
    np.testing.assert_array_equal(out["image"][:40, :48], sample["image"])
    assert (out["image"][40:] == 0).all() and (out["label"][40:] == 255).all()


def _same_label(sample: dict, out: dict) -> None:
    assert out["image"].shape == sample["image"].shape
    np.testing.assert_array_equal(out["label"], sample["label"])


def _normalized(sample: dict, out: dict) -> None:
    np.testing.assert_allclose(out["image"], (sample["image"] - 100.0) / 2.0, rtol=1e-6)


def _channels_first(sample: dict, out: dict) -> None:
    assert out["image"].shape == (3, 40, 48)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), sample["image"])


def _remapped(sample: dict, out: dict) -> None:
    expected = np.where(sample["label"] == 1, 255, 2 - sample["label"])  # 1 is not in the mapping
    np.testing.assert_array_equal(np.asarray(out["label"]), expected)


def _neck(cfg: dict) -> Callable[[dict], None]:
    def run(_names: dict) -> None:
        head = NECKS.build({**cfg, "in_channels": [8, 8, 8, 8], "text_dim": 16}).eval()
        features = [torch.randn(1, 8, 32 // 2**i, 32 // 2**i) for i in range(4)]
        logits = head(features, torch.randn(1, 3, 16))
        assert logits.shape == (1, 3, 32, 32) and torch.isfinite(logits).all()

    return run


def _selector(name: str) -> Callable[[dict], None]:
    def run(_names: dict) -> None:
        rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
        similarity = torch.exp(-((rows - 2) ** 2 + (cols - 5) ** 2) / 2)  # peak at cell (2, 5)
        points = POINT_SELECTORS.build({"type": name})(similarity, GridPlacement.whole(32, 32))
        assert isinstance(points, PointPrompts)
        positive = points.coords[points.labels == 1]
        assert len(positive) >= 1
        x, y = positive[0]
        # the peak cell's centre is (22, 10) in pixels (4 per cell); within one cell of it
        assert abs(x - 22) <= 4 and abs(y - 10) <= 4

    return run


def _clip_backbone(names: dict) -> None:
    backbone = BACKBONES.build(
        {"type": "ClipBackbone", "model_name": names["vit"], "templates": "photo"}
    )
    text = backbone.encode_text(["cat", "dog"])
    assert text.shape == (2, 32)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))


def _semantic_pipeline(names: dict) -> None:
    cfg = {
        "pipeline": {
            "type": "SemanticSegmenter",
            "backbone": {"type": "ClipBackbone", "model_name": names["vit"], "templates": "photo"},
            "inference": {"mode": "whole"},
        }
    }
    result = ovseg.create_pipeline(cfg, vocabulary=["cat", "dog"])(_sample()["image"])
    assert result.sem_seg.shape == (40, 48) and set(np.unique(result.sem_seg)) <= {0, 1}


def _sam_decoder(_names: dict) -> None:
    decoder = MASK_DECODERS.build(
        {"type": "SamDecoder", "model_type": "ovseg-sam-tiny", "pretrained": "shapes"}
    )
    decoder.set_image(_sample()["image"])
    out = decoder.predict(point_coords=[[[10.0, 12.0]]], point_labels=[[1]])
    assert out.masks.shape[0] == 1 and out.masks.shape[-2:] == (40, 48)


def _synthetic_dataset(_names: dict) -> None:
    dataset = DATASETS.build({"type": "SyntheticSceneDataset", "num": 2, "image_size": 32})
    sample = dataset[1]
    assert len(dataset) == 2 and sample["image"].shape == (32, 32, 3)
    assert sample["label"].shape == (32, 32) and sample["label"].max() < len(dataset.class_names)


def _synthetic_reasoning_dataset(_names: dict) -> None:
    dataset = DATASETS.build(
        {"type": "SyntheticReasoningDataset", "num": 2, "image_size": 32, "queries_per_scene": 2}
    )
    queries = dataset[1]["queries"]
    assert len(dataset) == 2 and len(queries) == 2
    assert all(q["masks"].shape == (1, 32, 32) and "[SEG]" in q["answer"] for q in queries)


def _reasoning_metric(_names: dict) -> None:
    metric = EVALUATORS.build({"type": "ReasoningEvaluator", "eps": 0.0})
    gt = np.zeros((4, 4), bool)
    gt[:2] = True
    query = {"question": "q", "masks": gt[None], "ignore": None, "kind": "class", "group": None}
    pred = np.zeros((4, 4), bool)
    pred[:1] = True
    metric.process({"queries": [query]}, [pred])
    assert metric.evaluate()["overall"]["gIoU"] == pytest.approx(50.0)


def _transformed_dataset(_names: dict) -> None:
    dataset = DATASETS.build(
        {
            "type": "TransformedDataset",
            "dataset": {"type": "SyntheticSceneDataset", "num": 1, "image_size": 32},
            "transform": {"type": "ToTensor"},
        }
    )
    sample = dataset[0]
    assert isinstance(sample["image"], torch.Tensor) and sample["image"].shape == (3, 32, 32)


def _semseg_metric(_names: dict) -> None:
    metric = EVALUATORS.build({"type": "SemSegEvaluator", "class_names": ["a", "b"]})
    metric.reset()
    metric.process({"label": torch.tensor([[0, 1], [1, 1]])}, torch.tensor([[0, 1], [0, 1]]))
    results = metric.evaluate()
    # IoU: class a 1/2, class b 2/3 -> mean 58.33 (percent)
    assert results["mIoU"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)


def _referring_metric(_names: dict) -> None:
    metric = EVALUATORS.build({"type": "ReferringEvaluator"})
    metric.reset()
    gt = np.zeros((4, 4), bool)
    gt[:2] = True
    pred = np.zeros((4, 4), bool)
    pred[:1] = True
    metric.process({"expressions": [{"text": "top", "mask": gt}]}, [pred])
    assert metric.evaluate()["overall"]["gIoU"] == pytest.approx(50.0)


BUILDS: dict[tuple[str, str], Callable[[dict], None]] = {
    ("backbone", "ClipBackbone"): _clip_backbone,
    ("pipeline", "SemanticSegmenter"): _semantic_pipeline,
    ("mask_decoder", "SamDecoder"): _sam_decoder,
    ("dataset", "SyntheticSceneDataset"): _synthetic_dataset,
    ("dataset", "TransformedDataset"): _transformed_dataset,
    ("dataset", "SyntheticReasoningDataset"): _synthetic_reasoning_dataset,
    ("evaluator", "ReasoningEvaluator"): _reasoning_metric,
    ("evaluator", "SemSegEvaluator"): _semseg_metric,
    ("evaluator", "ReferringEvaluator"): _referring_metric,
    ("neck", "SemanticFPN"): _neck({"type": "SemanticFPN", "fpn_channels": 8, "channels": 8}),
    ("neck", "UPerNet"): _neck({"type": "UPerNet", "channels": 8}),
    ("point_selector", "SasPSelector"): _selector("SasPSelector"),
    ("point_selector", "TopKPeakSelector"): _selector("TopKPeakSelector"),
    ("transform", "Resize"): _transform({"type": "Resize", "scale": [64, 20]}, _shape(20, 24)),
    ("transform", "RandomResize"): _transform(
        {"type": "RandomResize", "scale": [64, 20], "ratio_range": [1.0, 1.0]}, _shape(20, 24)
    ),
    ("transform", "RandomCrop"): _transform(
        {"type": "RandomCrop", "crop_size": 16}, _shape(16, 16)
    ),
    ("transform", "RandomFlip"): _transform({"type": "RandomFlip", "prob": 1.0}, _flipped),
    ("transform", "Pad"): _transform({"type": "Pad", "size": 64}, _padded),
    ("transform", "PhotoMetricDistortion"): _transform(
        {"type": "PhotoMetricDistortion"}, _same_label
    ),
    ("transform", "Normalize"): _transform(
        {"type": "Normalize", "mean": [100.0, 100.0, 100.0], "std": [2.0, 2.0, 2.0]}, _normalized
    ),
    ("transform", "ToTensor"): _transform({"type": "ToTensor"}, _channels_first),
    ("transform", "RemapLabels"): _transform(
        {"type": "RemapLabels", "mapping": {0: 2, 2: 0}}, _remapped
    ),
    ("transform", "Compose"): _transform(
        {
            "type": "Compose",
            "transforms": [{"type": "RandomFlip", "prob": 1.0}, {"type": "ToTensor"}],
        },  # fmt: skip
        _flipped_tensor,
    ),
}

ELSEWHERE: dict[tuple[str, str], tuple[str, str]] = {
    ("detector", "ClipOwlDetector"): (
        "needs trained OWL heads (an OwlDetection export)",
        "tests/tasks/test_owl_detection.py",
    ),
    ("detector", "clip_owl"): (
        "needs trained OWL heads (an OwlDetection export)",
        "tests/model_zoo/test_shapes_tiny_detection.py",
    ),
    ("dataset", "SyntheticDetectionDataset"): (
        "generates scenes",
        "tests/data/test_synthetic_detection.py",
    ),
    ("task", "OwlDetection"): ("trains on generated scenes", "tests/tasks/test_owl_detection.py"),
    ("detector", "OwlViTDetector"): (
        "needs a detector folder (config, weights, processor)",
        "tests/models/detectors/test_detectors.py",
    ),
    ("detector", "Owlv2Detector"): (
        "needs a detector folder (config, weights, processor)",
        "tests/models/detectors/test_detectors.py",
    ),
    ("detector", "GroundingDinoDetector"): (
        "needs a detector folder (config, weights, processor)",
        "tests/models/detectors/test_detectors.py",
    ),
    ("detector", "MdetrDetector"): (
        "needs a checkpoint and a tokenizer",
        "tests/models/detectors/test_mdetr.py",
    ),
    ("pipeline", "DetectionPipeline"): ("needs a detector", "tests/pipelines/test_detection.py"),
    ("pipeline", "GroundedReferringSegmenter"): (
        "needs a detector, a SAM and a CLIP",
        "tests/pipelines/test_grounded_referring.py",
    ),
    ("dataset", "LVISInstances"): (
        "needs an LVIS JSON and images",
        "tests/evaluation/test_lvis_evaluator.py",
    ),
    ("evaluator", "CocoDetectionEvaluator"): (
        "needs COCO ground truth",
        "tests/evaluation/test_detection_evaluator.py",
    ),
    ("evaluator", "OVCocoEvaluator"): (
        "needs COCO ground truth",
        "tests/evaluation/test_detection_evaluator.py",
    ),
    ("evaluator", "LVISEvaluator"): (
        "needs LVIS ground truth",
        "tests/evaluation/test_lvis_evaluator.py",
    ),
    ("evaluator", "RECEvaluator"): (
        "needs RefCOCO data",
        "tests/evaluation/test_grounding_evaluator.py",
    ),
    ("dataset", "ADE20KDataset"): ("needs an ADE20K folder", "tests/data/test_ade20k.py"),
    ("dataset", "ADE20K847Dataset"): ("needs an ADE20K-847 folder", "tests/data/test_ade20k.py"),
    ("dataset", "COCOStuffDataset"): ("needs a COCO-Stuff folder", "tests/data/test_coco_stuff.py"),
    ("dataset", "COCOObjectDataset"): (
        "needs a COCO-Stuff folder",
        "tests/data/test_coco_object.py",
    ),
    ("dataset", "COCOInstances"): (
        "needs a COCO instances JSON and images",
        "tests/data/test_coco_instances.py",
    ),
    ("dataset", "Detectron2SemSegDataset"): (
        "needs detectron2 dataset dicts, images and label PNGs",
        "tests/data/test_detectron2.py",
    ),
    ("dataset", "Detectron2InstanceDataset"): (
        "needs detectron2 dataset dicts with annotations and images",
        "tests/export/test_detectron2.py",
    ),
    ("dataset", "CityscapesDataset"): (
        "needs a Cityscapes folder",
        "tests/data/test_cityscapes.py",
    ),
    ("dataset", "PascalVOCDataset"): ("needs a VOC2012 folder", "tests/data/test_voc.py"),
    ("dataset", "PascalContextDataset"): (
        "needs a Pascal Context folder",
        "tests/data/test_pascal_context.py",
    ),
    ("dataset", "FolderDataset"): ("needs an image folder", "tests/data/test_folder.py"),
    ("dataset", "RefCOCODataset"): ("needs RefCOCO refs and COCO", "tests/data/test_refcoco.py"),
    ("dataset", "CsvCaptionDataset"): (
        "needs a caption CSV and images",
        "tests/data/test_captions.py",
    ),  # fmt: skip
    ("dataset", "SamPromptDataset"): ("needs COCO instances", "tests/data/test_sam_prompts.py"),
    ("dataset", "ReasonSegDataset"): ("needs ReasonSeg files", "tests/data/test_reasonseg.py"),
    ("evaluator", "CocoInstanceEvaluator"): (
        "needs COCO ground truth",
        "tests/evaluation/test_instance_evaluator.py",
    ),
    ("evaluator", "VocabFreeEvaluator"): (
        "needs a text database and a dataset",
        "tests/evaluation/test_vocab_free.py",
    ),
    ("backbone", "ProxyClipBackbone"): (
        "needs a proxy vision model",
        "tests/models/backbones/test_proxyclip.py",
    ),
    ("backbone", "ScClipBackbone"): (
        "needs a CLIP ViT with more blocks than the tiny one",
        "tests/models/backbones/test_scclip.py",
    ),
    ("mask_decoder", "Sam2Decoder"): (
        "needs the sam2 package's configs",
        "tests/models/decoders/test_sam2.py",
    ),
    ("mask_decoder", "HqSamDecoder"): (
        "needs the segment_anything_hq package",
        "tests/models/decoders/test_sam_hq.py",
    ),
    ("mask_classifier", "MaskPoolingClassifier"): (
        "needs dense CLIP features and masks",
        "tests/models/classifiers/test_mask_pooling.py",
    ),
    ("mask_classifier", "MaskedCropClassifier"): (
        "needs a CLIP and masks",
        "tests/models/classifiers/test_masked_crop.py",
    ),
    ("pipeline", "DenseCLIPSegmenter"): (
        "needs an exported DenseCLIP",
        "tests/pipelines/test_denseclip.py",
    ),
    ("pipeline", "ReferringSegmenter"): (
        "needs a SAM and a CLIP",
        "tests/pipelines/test_referring.py",
    ),  # fmt: skip
    ("pipeline", "InstanceSegmenter"): (
        "needs a SAM and a CLIP",
        "tests/pipelines/test_instance.py",
    ),  # fmt: skip
    ("pipeline", "ReasoningSegmenter"): (
        "needs a multimodal language model, a CLIP tower and a SAM",
        "tests/pipelines/test_reasoning.py",
    ),
    ("pipeline", "VocabFreeSegmenter"): (
        "needs a text database",
        "tests/pipelines/test_vocab_free.py",
    ),
    ("pipeline", "VocabFreeInstanceSegmenter"): (
        "needs a text database and a SAM",
        "tests/pipelines/test_vocab_free_instance.py",
    ),
    ("pipeline", "PaintedSemanticSegmenter"): (
        "wraps a semantic and an instance pipeline",
        "tests/pipelines/test_painted_semantic.py",
    ),
    ("pipeline", "SemanticInstanceSegmenter"): (
        "wraps a semantic pipeline and a SAM decoder",
        "tests/pipelines/test_semantic_instance.py",
    ),
    ("pipeline", "VideoSegmenter"): (
        "wraps a referring or instance pipeline and reads a video",
        "tests/pipelines/test_video.py",
    ),
    ("vocab_source", "CasedSearch"): ("needs a text database", "tests/cased/test_search.py"),
    ("task", "ContrastiveCLIP"): (
        "trains on a caption dataset",
        "tests/tasks/test_contrastive_clip.py",
    ),  # fmt: skip
    ("task", "DenseCLIP"): ("trains on a segmentation dataset", "tests/tasks/test_denseclip.py"),
    ("task", "PromptedSAM"): ("trains on COCO instances", "tests/tasks/test_prompted_sam.py"),
    ("task", "READ"): ("needs a tokenizer, a CLIP and a SAM", "tests/tasks/test_read.py"),
}


def _registered() -> dict[tuple[str, str], object]:
    """Built-in entries (defined in ovseg; other tests register their own helpers too)."""
    load_all()
    entries = {
        (kind, name): registry.get(name)
        for kind, registry in _ALL_REGISTRIES.items()
        if kind in BUILT_IN_KINDS
        for name in registry.names()
    }
    return {
        key: obj
        for key, obj in entries.items()
        if getattr(obj, "__module__", "").split(".")[0] == "ovseg"
    }


def test_every_component_is_covered():
    entries = _registered()
    covered = {entries[key] for key in (*BUILDS, *ELSEWHERE) if key in entries}
    missing = sorted(
        f"{kind}:{name}" for (kind, name), obj in entries.items() if obj not in covered
    )
    assert not missing, f"add these to BUILDS or ELSEWHERE: {missing}"
    stale = sorted(f"{k}:{n}" for k, n in (*BUILDS, *ELSEWHERE) if (k, n) not in entries)
    assert not stale, f"no longer registered: {stale}"
    assert set(BUILT_IN_KINDS) <= set(_ALL_REGISTRIES)


@pytest.mark.parametrize("key", sorted(BUILDS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_builds_and_runs(key, tiny_model_names):
    torch.manual_seed(0)
    BUILDS[key](tiny_model_names)


@pytest.mark.parametrize("key", sorted(ELSEWHERE), ids=lambda k: f"{k[0]}-{k[1]}")
def test_tested_elsewhere_on_a_tiny_fixture(key):
    reason, test_file = ELSEWHERE[key]
    text = (ROOT / test_file).read_text(encoding="utf-8")
    assert reason and key[1] in text, f"{test_file} does not test {key[1]}"


def _registering_modules() -> dict[str, set[str]]:
    """Registry variable name -> modules of ovseg whose source calls ``NAME.register``."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "ovseg").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "register"
                and isinstance(node.value, ast.Name)
                and node.value.id.isupper()
            ):
                found.setdefault(node.value.id, set()).add(module)
    return found


def test_registries_list_every_module_that_registers_into_them():
    import ovseg.registry as registry_module

    found = _registering_modules()
    assert found, "no registrations found"
    for variable, modules in found.items():
        registry = getattr(registry_module, variable)
        assert modules <= set(registry.builtin_modules), (variable, modules)
