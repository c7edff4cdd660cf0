"""Segmentation transforms: mmseg semantics on small arrays (resize, crop, flip, photometric)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.data.transforms import (
    Compose,
    Normalize,
    Pad,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    RandomResize,
    RemapLabels,
    Resize,
    ToTensor,
    TransformedDataset,
    build_transforms,
    hsv_to_rgb_u8,
    resize_image,
    resize_label,
    rgb_to_hsv_u8,
)
from ovseg.errors import ConfigError
from ovseg.registry import DATASETS, TRANSFORMS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sample(h=20, w=30, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (h, w)).astype(np.int64)
    return {"image": image, "label": label, "filename": "x.png"}


def test_everything_is_registered_and_compose_builds_from_configs():
    for name in ("Compose", "Resize", "RandomResize", "RandomCrop", "RandomFlip", "Pad"):
        assert name in TRANSFORMS
    assert {"PhotoMetricDistortion", "Normalize", "ToTensor", "RemapLabels"} <= set(
        TRANSFORMS.names()
    )
    pipeline = build_transforms([{"type": "RandomFlip", "prob": 1.0}, {"type": "ToTensor"}])
    assert isinstance(pipeline, Compose)
    sample = _sample()
    out = pipeline(sample)
    assert out["image"].shape == (3, 20, 30) and out["image"].dtype == torch.float32
    assert out["label"].dtype == torch.int64 and out["filename"] == "x.png"
    assert torch.equal(out["label"], torch.from_numpy(sample["label"][:, ::-1].copy()))
    with pytest.raises(ConfigError):
        build_transforms("RandomFlip")


def test_keep_ratio_resize_follows_mmcv_rescale():
    # scale (2048, 512): factor min(2048 / 300, 512 / 200) = 2.56 -> (512, 768)
    out = Resize([2048, 512])({"image": np.zeros((200, 300, 3), np.uint8), "label": None})
    assert out["image"].shape == (512, 768, 3)
    # the long side bound wins for a very wide image: min(2048 / 1000, 512 / 100) = 2.048
    out = Resize([2048, 512])({"image": np.zeros((100, 1000, 3), np.uint8)})
    assert out["image"].shape == (int(100 * 2.048 + 0.5), 2048, 3)
    out = Resize([40, 10], keep_ratio=False)({"image": np.zeros((7, 9, 3), np.uint8)})
    assert out["image"].shape == (10, 40, 3)


def test_random_resize_ratio_range(monkeypatch):
    transform = RandomResize([2048, 512], ratio_range=[0.5, 2.0])
    sizes = set()
    np.random.seed(0)
    for _ in range(40):
        out = transform({"image": np.zeros((64, 64, 3), np.uint8), "label": np.zeros((64, 64))})
        h, w = out["image"].shape[:2]
        assert h == w and out["label"].shape == (h, w)
        assert 256 <= h <= 1024  # short side 512 x ratio in [0.5, 2]
        sizes.add(h)
    assert len(sizes) > 20
    # the ratio is random_sample() * (max - min) + min, the scale int(side * ratio)
    monkeypatch.setattr(np.random, "random_sample", lambda: 0.25)
    assert transform.sample_scale() == (int(2048 * 0.875), int(512 * 0.875))
    with pytest.raises(ConfigError):
        RandomResize(512, ratio_range=[2.0, 1.0])


def test_resize_image_and_label_match_opencv_sampling():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3) * 2
    # OpenCV 4.5 INTER_LINEAR (cv2.resize(image, (11, 8))), channel 0, first and last rows
    expected_first = [0, 3, 6, 10, 14, 18, 22, 26, 29, 33, 36]
    expected_last = [168, 171, 174, 178, 182, 186, 190, 194, 197, 201, 204]
    out = resize_image(image, (8, 11))[:, :, 0]
    assert np.abs(out[0].astype(int) - expected_first).max() <= 1
    assert np.abs(out[-1].astype(int) - expected_last).max() <= 1
    label = np.arange(12).reshape(3, 4)
    # nearest neighbour takes source index floor(dst * src / dst_size)
    assert resize_label(label, (6, 8)).tolist()[1] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert resize_label(label, (2, 2)).tolist() == [[0, 2], [4, 6]]
    assert resize_label(label.astype(np.uint8), (6, 8)).dtype == np.uint8


def test_random_crop_respects_cat_max_ratio():
    label = np.zeros((40, 40), np.int64)
    label[:, 20:] = 1
    image = np.zeros((40, 40, 3), np.uint8)
    crop = RandomCrop(20, cat_max_ratio=0.75)
    draws = []
    real = crop.crop_box
    crop.crop_box = lambda h, w: draws.append(1) or real(h, w)

    def balanced(lab):
        values, counts = np.unique(lab, return_counts=True)
        return len(values) == 2 and counts.max() / counts.sum() < 0.75

    np.random.seed(0)
    kept = 0
    for _ in range(40):
        draws.clear()
        out = crop({"image": image, "label": label})
        assert out["image"].shape == (20, 20, 3) and out["label"].shape == (20, 20)
        # a crop is redrawn until balanced, at most 10 times (11 draws); the last one stays
        assert balanced(out["label"]) or len(draws) == 11
        kept += balanced(out["label"])
    free = RandomCrop(20)
    np.random.seed(0)
    unconstrained = sum(
        balanced(free({"image": image, "label": label})["label"]) for _ in range(40)
    )
    assert kept >= 36 and unconstrained < 30
    # ignored pixels are left out of the share; with one class only, all 11 draws happen
    only = np.full((40, 40), 255, np.int64)
    only[:2, :2] = 3
    draws.clear()
    crop({"image": image, "label": only})
    assert len(draws) == 11
    assert not crop.balanced(np.array([[1, 1], [1, 255]]))
    assert crop.balanced(np.array([[1, 2], [255, 255]]))
    assert not RandomCrop(2, cat_max_ratio=0.5).balanced(np.array([[1, 2], [2, 2]]))


def test_random_crop_smaller_input_and_pad():
    sample = _sample(10, 12)
    out = RandomCrop([16, 8])(sample)
    assert out["image"].shape == (10, 8, 3) and out["label"].shape == (10, 8)
    padded = Pad(16, pad_val=0, seg_pad_val=255)(out)
    assert padded["image"].shape == (16, 16, 3) and padded["label"].shape == (16, 16)
    assert (padded["label"][10:] == 255).all() and (padded["label"][:, 8:] == 255).all()
    assert (padded["image"][10:] == 0).all()
    np.testing.assert_array_equal(padded["label"][:10, :8], out["label"])


def test_flip_flips_image_and_label_together():
    sample = _sample()
    out = RandomFlip(prob=1.0)(sample)
    np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1])
    np.testing.assert_array_equal(out["label"], sample["label"][:, ::-1])
    out = RandomFlip(prob=1.0, direction="vertical")(sample)
    np.testing.assert_array_equal(out["image"], sample["image"][::-1])
    np.testing.assert_array_equal(out["label"], sample["label"][::-1])
    assert RandomFlip(prob=0.0)(sample) is sample
    np.random.seed(1)
    flip = RandomFlip(0.5)
    flipped = [not np.array_equal(flip(sample)["label"], sample["label"]) for _ in range(200)]
    assert 70 < sum(flipped) < 130


def test_hsv_conversion_matches_opencv():
    rgb = np.array(
        [[[215, 40, 40], [245, 140, 30], [45, 165, 60], [40, 70, 210], [0, 0, 0], [10, 200, 100]]],
        np.uint8,
    )
    # cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV) with OpenCV 4.5.5
    expected = [
        [0, 208, 215],
        [15, 224, 245],
        [64, 185, 165],
        [115, 206, 210],
        [0, 0, 0],
        [74, 242, 200],
    ]
    assert rgb_to_hsv_u8(rgb)[0].tolist() == expected
    hsv = np.array(
        [[[0, 255, 255], [30, 128, 200], [90, 37, 77], [179, 200, 250], [150, 0, 99]]], np.uint8
    )
    # cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), OpenCV 4.5.5, pixels inside a 64x64 image (SIMD path)
    expected = [[255, 0, 0], [200, 200, 99], [65, 76, 77], [250, 53, 60], [99, 99, 99]]
    assert hsv_to_rgb_u8(hsv)[0].tolist() == expected


def test_photometric_distortion_order_and_ranges(monkeypatch):
    image = np.full((4, 4, 3), 100, np.uint8)
    image[0, 0] = (200, 50, 50)
    calls = []
    pmd = PhotoMetricDistortion()
    for step in ("brightness", "contrast", "saturation", "hue"):
        monkeypatch.setattr(pmd, step, lambda img, s=step: calls.append(s) or img)
    monkeypatch.setattr(np.random, "randint", lambda *a, **k: 1)
    pmd({"image": image})
    assert calls == ["brightness", "contrast", "saturation", "hue"]  # mode 1: contrast second
    calls.clear()
    monkeypatch.setattr(np.random, "randint", lambda *a, **k: 0)
    pmd({"image": image})
    assert calls == ["brightness", "saturation", "hue", "contrast"]  # mode 0: contrast last


def test_photometric_steps_compute_like_mmseg(monkeypatch):
    image = np.array([[[10, 250, 128]]], np.uint8)
    pmd = PhotoMetricDistortion(brightness_delta=32, contrast_range=(0.5, 1.5))
    monkeypatch.setattr(np.random, "randint", lambda *a, **k: 1)
    monkeypatch.setattr(np.random, "uniform", lambda low, high: 10.7)
    # float32 add, clip to [0, 255], truncate
    assert pmd.brightness(image).tolist() == [[[20, 255, 138]]]
    monkeypatch.setattr(np.random, "uniform", lambda low, high: 1.5)
    assert pmd.contrast(image).tolist() == [[[15, 255, 192]]]
    hsv = rgb_to_hsv_u8(image)
    monkeypatch.setattr(np.random, "uniform", lambda low, high: 0.5)
    sat = rgb_to_hsv_u8(pmd.saturation(image))
    assert abs(int(sat[0, 0, 1]) - int(hsv[0, 0, 1]) // 2) <= 2
    monkeypatch.setattr(np.random, "randint", lambda *a, **k: 1 if not a or a[0] == 2 else 9)
    hue = rgb_to_hsv_u8(pmd.hue(image))
    assert (int(hue[0, 0, 0]) - int(hsv[0, 0, 0])) % 180 in (8, 9, 10)
    # hue_delta 0 and unit ranges change colours only by the 8-bit HSV round trip (as mmseg)
    calm = PhotoMetricDistortion(0, (1, 1), (1, 1), 0)
    monkeypatch.undo()
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = calm({"image": rgb})["image"]
    assert np.abs(out.astype(int) - rgb).max() <= 6
    with pytest.raises(ConfigError):
        calm({"image": rgb.astype(np.float32)})


def test_normalize_totensor_and_remap():
    sample = _sample(4, 5)
    out = Normalize([10, 20, 30], [2, 4, 5])(sample)
    expected = (sample["image"][1, 2].astype(np.float32) - [10, 20, 30]) / [2, 4, 5]
    np.testing.assert_allclose(out["image"][1, 2], expected, rtol=1e-6)
    tensor = ToTensor()(out)["image"]
    assert tensor.shape == (3, 4, 5)
    np.testing.assert_allclose(tensor[:, 1, 2].numpy(), expected, rtol=1e-6)
    label = np.array([[0, 1, 2], [3, 255, 1]])
    remapped = RemapLabels({0: 0, 2: 1, 3: 2})({"image": sample["image"], "label": label})
    assert remapped["label"].tolist() == [[0, 255, 1], [2, 255, 255]]
    with pytest.raises(ConfigError):
        Normalize([0, 0, 0], [1, 0, 1])


def test_transformed_dataset_wraps_any_dataset():
    assert "TransformedDataset" in DATASETS
    inner = {"type": "SyntheticSceneDataset", "num": 3, "image_size": 32, "split": "train"}
    dataset = TransformedDataset(
        inner, [{"type": "RandomCrop", "crop_size": 16}, {"type": "ToTensor"}]
    )
    assert len(dataset) == 3 and len(dataset.class_names) == 68 and dataset.unseen
    sample = dataset[1]
    assert sample["image"].shape == (3, 16, 16) and sample["label"].shape == (16, 16)
    plain = TransformedDataset(dataset.dataset)
    assert plain[0]["image"].shape == (32, 32, 3)
    with pytest.raises(ConfigError):
        TransformedDataset(5)
