"""SamPromptDataset: COCO instances, SAM's prompt sampling, and the resize to SAM's frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.data.sam_prompts import (
    Prompt,
    SamPromptDataset,
    ToSamFrame,
    interior_point,
    jitter_box,
    mask_box,
    sample_points,
)
from ovseg.errors import ConfigError, DatasetError
from ovseg.registry import DATASETS
from tests.models.decoders.sam_tiny import write_tiny_coco


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("coco"))


def test_reads_masks_and_skips_images_without_instances(coco):
    dataset = DATASETS.build(
        {"type": "SamPromptDataset", "ann_file": str(coco["ann_file"]), "img_dir": coco["img_dir"]}
    )
    assert dataset.image_ids == [1, 3, 4, 5, 6]  # image 2 has no instance
    np.random.seed(0)
    for index, image_id in enumerate(dataset.image_ids):
        sample = dataset[index]
        assert sample["image_id"] == image_id
        assert sample["image"].shape == (40, 48, 3) and sample["image"].dtype == np.uint8
        np.testing.assert_array_equal(sample["masks"], coco["masks"][image_id])  # RLE, polygons
        assert sorted(p.instance for p in sample["prompts"]) == list(range(len(sample["masks"])))


def test_training_prompts_follow_sams_recipe(coco):
    dataset = SamPromptDataset(
        coco["ann_file"], coco["img_dir"], box_prob=0.5, max_points=3, negative_prob=0.5
    )
    np.random.seed(1)
    seen = {"box": 0, "point": 0, "negative": 0, "counts": set()}
    for _ in range(30):
        for index in range(len(dataset)):
            sample = dataset[index]
            for prompt in sample["prompts"]:
                mask = sample["masks"][prompt.instance]
                if prompt.kind == "box":
                    seen["box"] += 1
                    assert prompt.points is None and not prompt.multimask
                    noise = np.abs(prompt.box - mask_box(mask))
                    assert noise.max() <= 20.0 + 1.0  # clipped noise, then kept >= 1 px wide
                    continue
                seen["point"] += 1
                xs, ys = prompt.points[:, 0].astype(int), prompt.points[:, 1].astype(int)
                positives = prompt.labels == 1
                assert mask[ys[positives], xs[positives]].all()
                assert not mask[ys[~positives], xs[~positives]].any()
                assert (~positives).sum() <= 1 and 1 <= positives.sum() <= 3
                assert prompt.multimask == (len(prompt.labels) == 1)
                seen["negative"] += int((~positives).sum())
                seen["counts"].add(int(positives.sum()))
    assert seen["box"] > 20 and seen["point"] > 20 and seen["negative"] > 5
    assert seen["counts"] == {1, 2, 3}


def test_training_prompts_depend_only_on_numpys_seed(coco):
    dataset = SamPromptDataset(coco["ann_file"], coco["img_dir"], negative_prob=0.3)
    np.random.seed(7)
    first = dataset[2]["prompts"]
    np.random.seed(7)
    again = dataset[2]["prompts"]
    for a, b in zip(first, again, strict=True):
        assert a.kind == b.kind
        for field in ("box", "points", "labels"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or np.array_equal(x, y)


def test_eval_prompts_are_exact_boxes_and_interior_points(coco):
    dataset = SamPromptDataset(coco["ann_file"], coco["img_dir"], mode="eval")
    sample = dataset[1]
    masks = sample["masks"]
    assert [p.kind for p in sample["prompts"]] == ["box", "point"] * len(masks)
    for prompt in sample["prompts"]:
        mask = masks[prompt.instance]
        if prompt.kind == "box":
            np.testing.assert_array_equal(prompt.box, mask_box(mask))
        else:
            np.testing.assert_array_equal(prompt.points, interior_point(mask))
            assert prompt.multimask and prompt.labels.tolist() == [1]


def test_jitter_box_noise_is_ten_percent_of_the_side_clipped_at_20px():
    rng = np.random.default_rng(0)
    box = np.array([100.0, 100.0, 150.0, 130.0])  # 50 x 30
    draws = np.stack([jitter_box(box, rng, (1000, 1000)) - box for _ in range(4000)])
    np.testing.assert_allclose(draws.std(axis=0), [5.0, 3.0, 5.0, 3.0], rtol=0.06)
    big = np.array([100.0, 100.0, 900.0, 900.0])  # 10 % would be 80 px
    draws = np.stack([jitter_box(big, rng, (1000, 1000)) - big for _ in range(500)])
    assert np.abs(draws).max() == pytest.approx(20.0)
    small = jitter_box(np.array([0.0, 0.0, 1.0, 1.0]), rng, (5, 5))
    assert small[2] - small[0] >= 1 and small[3] - small[1] >= 1 and small.min() >= -1


def test_interior_point_is_farthest_from_the_background():
    rng = np.random.default_rng(3)
    for _ in range(10):
        mask = rng.random((9, 11)) > 0.3
        x, y = interior_point(mask)[0].astype(int)
        background = [(by, bx) for by in range(-1, 10) for bx in range(-1, 12)]
        background = [(by, bx) for by, bx in background if not (0 <= by < 9 and 0 <= bx < 11)]
        background += [tuple(p) for p in np.argwhere(~mask)]

        def depth(py, px, background=background):
            return min((py - by) ** 2 + (px - bx) ** 2 for by, bx in background)

        best = max(depth(py, px) for py, px in np.argwhere(mask))
        assert mask[y, x] and depth(y, x) == best


def test_sample_points_without_room_for_a_negative():
    mask = np.ones((4, 4), dtype=bool)  # the grown box holds no background pixel
    points, labels = sample_points(mask, 20, np.random.default_rng(0), negative_prob=1.0)
    assert len(points) == 16 and labels.tolist() == [1] * 16  # all distinct pixels, no negative


def test_to_sam_frame_scales_image_masks_and_prompts():
    image = np.zeros((40, 48, 3), dtype=np.uint8)
    image[10:20, 12:36] = 255
    masks = np.zeros((1, 40, 48), dtype=bool)
    masks[0, 10:20, 12:36] = True
    prompt_box = Prompt(0, box=np.array([12.0, 10.0, 36.0, 20.0]))
    prompt_points = Prompt(0, points=np.array([[24.0, 15.0]]), labels=np.array([1]))
    out = ToSamFrame(64)(
        {"image": image, "masks": masks, "prompts": [prompt_box, prompt_points], "image_id": 3}
    )
    assert out["input_size"] == (53, 64) and out["image"].shape == (3, 53, 64)
    assert out["image"].dtype == torch.uint8 and out["image_id"] == 3
    assert out["masks"].shape == (1, 53, 64) and out["masks"].dtype == torch.bool
    sx, sy = 64 / 48, 53 / 40
    np.testing.assert_allclose(out["prompts"][0].box, [12 * sx, 10 * sy, 36 * sx, 20 * sy])
    np.testing.assert_allclose(out["prompts"][1].points, [[24 * sx, 15 * sy]])
    ys, xs = np.nonzero(out["masks"][0].numpy())
    assert abs(xs.min() - 12 * sx) <= 1 and abs(ys.max() + 1 - 20 * sy) <= 1


def test_bad_arguments(coco, tmp_path):
    with pytest.raises(ConfigError, match="mode"):
        SamPromptDataset(coco["ann_file"], coco["img_dir"], mode="test")
    with pytest.raises(ConfigError, match="probabilities"):
        SamPromptDataset(coco["ann_file"], coco["img_dir"], box_prob=1.5)
    with pytest.raises(DatasetError, match="does not exist"):
        SamPromptDataset(tmp_path / "none.json", coco["img_dir"])
    with pytest.raises(DatasetError, match="does not exist"):
        SamPromptDataset(coco["ann_file"], tmp_path / "no_images")
    with pytest.raises(DatasetError, match="no instance"):
        SamPromptDataset(coco["ann_file"], coco["img_dir"], min_area=10_000)
