"""``ovseg config import``: mmseg evaluation configs of SCLIP / NACLIP / ClearCLIP / ProxyCLIP.

Each test writes a method repository's layout (``configs/base_config.py``, ``configs/cfg_*.py``,
``configs/cls_*.txt``) in the format those repositories use, imports it, and compares the result
with the packaged preset for the same method and benchmark.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ovseg.cli import main
from ovseg.config import load_config, to_container
from ovseg.errors import UnmappableConfigError
from ovseg.interop.mmengine_config import import_mmseg_config
from ovseg.vocab.vocabulary import CLASS_DIR, read_class_file

pytest.importorskip("mmengine", reason="config import reads configs with mmengine")

BASES = {
    "sclip": "model = dict(type='CLIPForSegmentation', clip_path='ViT-B/16')",
    "naclip": "model = dict(type='NACLIP', clip_path='ViT-B/16')",
    "clearclip": (
        "model = dict(type='ClearCLIPSegmentation', clip_type='CLIP', vit_type='ViT-B/16',\n"
        "             model_type='ClearCLIP', ignore_residual=True)"
    ),
    "proxyclip": (
        "model = dict(type='ProxyCLIPSegmentation', clip_type='{tag}', model_type='{arch}',\n"
        "             vfm_model='dino', checkpoint=None)"
    ),
}
RUNTIME = """
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
default_scope = 'mmseg'
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
test_cfg = dict(type='TestLoop')
default_hooks = dict(timer=dict(type='IterTimerHook'),
                     visualization=dict(type='SegVisualizationHook', interval=1))
"""
# dataset type, image / label prefixes, split file, LoadAnnotations options
DATASETS = {
    "voc21": ("PascalVOCDataset", "JPEGImages", "SegmentationClass",
              "ImageSets/Segmentation/val.txt", ""),
    "voc20": ("PascalVOC20Dataset", "JPEGImages", "SegmentationClass",
              "ImageSets/Segmentation/val.txt", ""),
    "pc59": ("PascalContext59Dataset", "JPEGImages", "SegmentationClassContext",
             "ImageSets/SegmentationContext/val.txt", "reduce_zero_label=True"),
    "object": ("COCOObjectDataset", "images/val2017", "annotations/val2017", None, ""),
    "city": ("CityscapesDataset", "leftImg8bit/val", "gtFine/val", None, ""),
    "ade": ("ADE20KDataset", "images/validation", "annotations/validation", None,
            "reduce_zero_label=True"),
}  # fmt: skip
SEPARATORS = {"sclip": ", ", "naclip": ", ", "clearclip": ",", "proxyclip": "; "}


def write_repo(
    root: Path,
    method: str,
    benchmark: str,
    model_args: str,
    short_side: int,
    class_file: str,
    data_root: str = "",
    base_format: dict[str, str] | None = None,
) -> Path:
    """A method repository's configs folder; returns ``configs/cfg_<benchmark>.py``."""
    configs = root / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    base = BASES[method].format(**(base_format or {"tag": "openai", "arch": "ViT-B/16"}))
    (configs / "base_config.py").write_text(f"# base configurations\n{base}\n{RUNTIME}")
    names = [names for _, names in read_class_file(CLASS_DIR / class_file)]
    sep = SEPARATORS[method]
    (configs / f"cls_{benchmark}.txt").write_text("\n".join(sep.join(n) for n in names) + "\n")
    dataset_type, img, ann, split_file, load_args = DATASETS[benchmark]
    ann_file = f"\n        ann_file='{split_file}'," if split_file else ""
    text = f"""\
_base_ = './base_config.py'

# model settings
model = dict(
    name_path='./configs/cls_{benchmark}.txt',{model_args}
)

# dataset settings
dataset_type = '{dataset_type}'
data_root = '{data_root}'

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, {short_side}), keep_ratio=True),
    dict(type='LoadAnnotations'{", " + load_args if load_args else ""}),
    dict(type='PackSegInputs')
]

test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='{img}', seg_map_path='{ann}'),{ann_file}
        pipeline=test_pipeline))
"""
    path = configs / f"cfg_{benchmark}.py"
    path.write_text(text)
    return path


def packaged(name: str) -> dict:
    return to_container(load_config(name))


# (method, benchmark, model kwargs as the method's cfg file writes them, Resize short side,
#  the class file the packaged preset uses, packaged preset, base config fields)
CASES = [
    ("sclip", "voc21", "\n    logit_scale=65,\n    prob_thd=0.1,\n    area_thd=0.1", 336,
     "voc21.txt", "sclip-vitb16-voc21", None),
    ("sclip", "city", "", 560, "city.txt", "sclip-vitb16-city", None),
    ("sclip", "object", "\n    logit_scale=50,\n    prob_thd=0.1", 336, "object.txt",
     "sclip-vitb16-object", None),
    ("naclip", "voc21", "\n    prob_thd=0.1,\n    slide_crop=0,", 336, "voc21.txt",
     "naclip-vitb16-voc21", None),
    ("naclip", "pc59", "", 336, "pc59.txt", "naclip-vitb16-pc59", None),
    ("clearclip", "voc21", "\n    prob_thd=0.5", 448, "voc21_plain.txt",
     "clearclip-vitb16-voc21", None),
    ("clearclip", "city", "\n    slide_crop=224,", 448, "city.txt", "clearclip-vitb16-city", None),
    ("proxyclip", "voc21", "\n    prob_thd= 0.2     # 0.2  OURS", 336, "voc21_proxyclip.txt",
     "proxyclip-vitb16-voc21", None),
    ("proxyclip", "city", "\n    slide_stride=112,\n    slide_crop=224", 448, "city.txt",
     "proxyclip-vitb16-city", None),
    ("proxyclip", "ade", "", 448, "ade.txt", "proxyclip-vitl14-ade",
     {"tag": "openai", "arch": "ViT-L-14"}),
    ("proxyclip", "voc20", "", 336, "voc20_plain.txt", "proxyclip-vith14-voc20",
     {"tag": "laion2b_s32b_b79k", "arch": "ViT-H-14"}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[5] for c in CASES])
def test_import_equals_packaged_preset(tmp_path, monkeypatch, case):
    method, benchmark, model_args, short, class_file, preset, base_format = case
    repo = tmp_path / method
    config = write_repo(repo, method, benchmark, model_args, short, class_file, "", base_format)
    monkeypatch.chdir(repo)  # the repositories run eval.py from their root
    assert import_mmseg_config(config) == packaged(preset)


def test_cli_writes_preset_that_loads(tmp_path, monkeypatch, capsys):
    config = write_repo(
        tmp_path, "sclip", "voc21", "\n    logit_scale=65,\n    prob_thd=0.1,\n    area_thd=0.1",
        336, "voc21.txt", data_root="data/VOCdevkit/VOC2012",
    )  # fmt: skip
    out = tmp_path / "out" / "sclip-voc21.yaml"
    monkeypatch.chdir(tmp_path)
    assert main(["config", "import", str(config), "--out", str(out)]) == 0
    loaded = to_container(load_config(out))
    assert loaded["data"] == {
        "test": {
            "type": "PascalVOCDataset",
            "num_classes": 21,
            "root": "data/VOCdevkit/VOC2012",
            "split": "val",
            "class_file": "voc21.txt",
        }
    }
    del loaded["data"]
    assert loaded == packaged("sclip-vitb16-voc21")
    # no overwrite unless asked
    before = out.read_text()
    assert main(["config", "import", str(config), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == before
    assert main(["config", "import", str(config), "--out", str(out), "--force", "--quiet"]) == 0
    # `ovseg config PRESET` still prints presets
    assert main(["config", "sclip-vitb16"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["pipeline"]["backbone"]["dense_mode"] == "sclip"


def test_unknown_class_list_is_written_inline(tmp_path, monkeypatch):
    config = write_repo(tmp_path, "proxyclip", "city", "", 336, "city.txt")
    (tmp_path / "configs" / "cls_city.txt").write_text("road; street\nsky\n")
    monkeypatch.chdir(tmp_path)
    preset = import_mmseg_config(config)
    assert preset["vocabulary"] == {"names": [["road", "street"], ["sky"]]}
    assert to_container(load_config(preset))["vocabulary"] == preset["vocabulary"]


def test_legacy_folder_layout_maps_to_folder_dataset(tmp_path, monkeypatch):
    config = write_repo(tmp_path, "naclip", "ade", "", 336, "ade.txt", data_root="/data/mine")
    text = (
        config.read_text()
        .replace("images/validation", "img")
        .replace("annotations/validation", "ann")
    )
    config.write_text(text)
    monkeypatch.chdir(tmp_path)
    data = import_mmseg_config(config)["data"]["test"]
    assert data == {
        "type": "FolderDataset",
        "root": "/data/mine",
        "images": "img",
        "labels": "ann",
        "reduce_zero_label": True,  # ADE's LoadAnnotations(reduce_zero_label=True)
        "class_file": "ade.txt",
    }


@pytest.mark.parametrize(
    "edit, key",
    [
        (("name_path=", "foo=3, name_path="), "model.foo"),
        (("keep_ratio=True", "keep_ratio=False"), "test_pipeline[1]"),
        (("dict(type='PackSegInputs')", "dict(type='RandomFlip', prob=1.0)"), "test_pipeline[3]"),
        (("dataset_type = ", "optim_wrapper = dict(lr=1)\ndataset_type = "), "optim_wrapper"),
        (("dataset_type = 'PascalVOCDataset'", "dataset_type = 'LoveDADataset'"), "dataset.type"),
    ],
)
def test_unmappable_keys_are_refused(tmp_path, monkeypatch, capsys, edit, key):
    config = write_repo(tmp_path, "sclip", "voc21", "", 336, "voc21.txt")
    config.write_text(config.read_text().replace(*edit, 1))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnmappableConfigError, match=key.replace("[", r"\[")):
        import_mmseg_config(config)
    out = tmp_path / "p.yaml"
    assert main(["config", "import", str(config), "--out", str(out)]) == 2
    assert "cannot map" in capsys.readouterr().err
    assert not out.exists()


def test_clearclip_gem_and_missing_name_file_are_refused(tmp_path, monkeypatch):
    config = write_repo(tmp_path, "clearclip", "voc21", "", 448, "voc21_plain.txt")
    base = tmp_path / "configs" / "base_config.py"
    base.write_text(base.read_text().replace("model_type='ClearCLIP'", "model_type='GEM'"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnmappableConfigError, match="model.model_type = 'GEM'"):
        import_mmseg_config(config)
    base.write_text(base.read_text().replace("model_type='GEM'", "model_type='MaskCLIP'"))
    backbone = import_mmseg_config(config)["pipeline"]["backbone"]
    assert backbone["dense_mode"] == "maskclip"
    assert (backbone["keep_residual"], backbone["keep_ffn"]) == (False, False)
    (tmp_path / "configs" / "cls_voc21.txt").unlink()
    with pytest.raises(Exception, match="name_path"):
        import_mmseg_config(config)


def test_mmseg_0x_layout_with_multiscaleflipaug(tmp_path, monkeypatch):
    """mmseg 0.x configs: ``data.test`` with img_dir / ann_dir / split and MultiScaleFlipAug."""
    config = write_repo(tmp_path, "sclip", "voc21", "", 336, "voc21.txt")
    legacy = """\
_base_ = './base_config.py'
model = dict(name_path='./configs/cls_voc21.txt', logit_scale=65, prob_thd=0.1, area_thd=0.1)
evaluation = dict(interval=1, metric='mIoU')
data = dict(test=dict(
    type='PascalVOCDataset', data_root='data/VOC2012', img_dir='JPEGImages',
    ann_dir='SegmentationClass', split='ImageSets/Segmentation/val.txt',
    pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='MultiScaleFlipAug', img_scale=(2048, 336), flip=False, transforms=[
            dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
            dict(type='Normalize', mean=[0, 0, 0], std=[1, 1, 1]),
            dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])])]))
"""
    base = (tmp_path / "configs" / "base_config.py").read_text()
    (tmp_path / "configs" / "base_config.py").write_text(base.replace("test_evaluator", "# "))
    config.write_text(legacy)
    monkeypatch.chdir(tmp_path)
    preset = import_mmseg_config(config)
    assert preset.pop("data")["test"]["split"] == "val"
    assert preset == packaged("sclip-vitb16-voc21")
    config.write_text(legacy.replace("flip=False", "flip=True"))
    with pytest.raises(UnmappableConfigError, match="test-time augmentation"):
        import_mmseg_config(config)


def test_proxyclip_pc459_layout_and_non_standard_folders(tmp_path, monkeypatch):
    config = write_repo(tmp_path, "proxyclip", "voc21", "", 448, "pc459.txt", "/data/VOC2010")
    text = (
        config.read_text()
        .replace("PascalVOCDataset", "PascalContext459Dataset")
        .replace("'SegmentationClass'", "'annotations_detectron2/pc459_val'")
        .replace("Segmentation/val.txt", "SegmentationContext/val.txt")
        .replace("dict(type='LoadAnnotations')", "dict(type='MyLoadAnnotations', reduce_zero_label=False)")
    )  # fmt: skip
    config.write_text(text)
    monkeypatch.chdir(tmp_path)
    preset = import_mmseg_config(config)
    assert preset["vocabulary"] == {"file": "pc459.txt"} and preset["benchmark"] is None
    assert preset["data"]["test"] == {
        "type": "PascalContextDataset", "num_classes": 459, "root": "/data/VOC2010",
        "split": "val", "class_file": "pc459.txt",
    }  # fmt: skip
    # other folders: refused with a split file, or where labels are not <image name>.png
    config = write_repo(tmp_path, "sclip", "voc21", "", 336, "voc21.txt", "/data/VOC2012")
    config.write_text(config.read_text().replace("'JPEGImages'", "'imgs'"))
    with pytest.raises(UnmappableConfigError, match="standard layout"):
        import_mmseg_config(config)
    config = write_repo(tmp_path, "sclip", "object", "", 336, "object.txt", "/data/coco")
    config.write_text(config.read_text().replace("images/val2017", "imgs"))
    with pytest.raises(UnmappableConfigError, match="<image name>.png"):
        import_mmseg_config(config)
