"""Boxes from masks, IoU and class-wise NMS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from ovseg.errors import ConfigError
from ovseg.models.classifiers import (
    box_iou,
    box_masks,
    boxes_from_masks,
    check_cross_class_iou,
    class_wise_nms,
    cross_class_nms,
    mask_iou,
)


def test_boxes_from_masks_exclusive_ends():
    masks = np.zeros((3, 5, 6), dtype=bool)
    masks[0, 2, 3] = True  # one pixel at x=3, y=2
    masks[1, 1:4, 0:2] = True
    masks[1, 4, 5] = True
    boxes = boxes_from_masks(masks)
    np.testing.assert_array_equal(boxes, [[3, 2, 4, 3], [0, 1, 6, 5], [0, 0, 0, 0]])
    assert boxes.dtype == torch.float32


def test_box_masks_hold_the_pixel_centres_inside_each_box():
    boxes = [
        [1.0, 2.0, 4.0, 3.0],
        [0.4, 0.0, 1.6, 1.4],
        [2.2, 2.2, 2.4, 2.4],
        [9.0, 9.0, 12.0, 12.0],
    ]
    masks = box_masks(boxes, 5, 6)
    assert masks.shape == (4, 5, 6) and masks.dtype == torch.bool
    expected = np.zeros((4, 5, 6), dtype=bool)
    expected[0, 2, 1:4] = True  # x centres 1.5, 2.5, 3.5; y centre 2.5
    expected[1, 0, 0:2] = True  # centres 0.5 and 1.5 lie in [0.4, 1.6); y only 0.5 in [0, 1.4)
    expected[2, 2, 2] = True  # holds no centre: the pixel under its centre
    expected[3, 4, 5] = True  # outside the image: the nearest pixel
    np.testing.assert_array_equal(masks.numpy(), expected)
    integer = torch.tensor([[0.0, 1.0, 3.0, 5.0], [2.0, 0.0, 6.0, 2.0]])
    np.testing.assert_array_equal(boxes_from_masks(box_masks(integer, 5, 6)), integer)


def test_box_and_mask_iou_by_hand():
    iou = box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    np.testing.assert_allclose(iou, [[1 / 7, 1.0, 0.0]])
    a = np.zeros((1, 4, 4), dtype=bool)
    a[0, :2, :] = True  # 8 px
    b = np.zeros((2, 4, 4), dtype=bool)
    b[0, 1:3, :] = True  # 8 px, 4 shared
    np.testing.assert_allclose(mask_iou(a, b), [[4 / 12, 0.0]])


def test_class_wise_nms_by_hand():
    boxes = [
        [0, 0, 10, 10],  # 0: label 0, 0.9
        [1, 0, 10, 10],  # 1: label 0, 0.8, IoU with 0 = 90/100 -> dropped
        [1, 0, 10, 10],  # 2: label 1, 0.7, other class -> kept
        [0, 0, 10, 5],  # 3: label 0, 0.6, IoU with 0 = 50/100 = 0.5, not > 0.5 -> kept
        [20, 20, 30, 30],  # 4: label 0, 0.95 -> kept, first
    ]
    scores = [0.9, 0.8, 0.7, 0.6, 0.95]
    labels = [0, 0, 1, 0, 0]
    keep = class_wise_nms(scores, labels, boxes=boxes, iou_threshold=0.5)
    assert keep.tolist() == [4, 0, 2, 3]
    keep = class_wise_nms(scores, labels, boxes=boxes, iou_threshold=0.4)
    assert keep.tolist() == [4, 0, 2]


def test_mask_mode():
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, :2] = True
    masks[1, :3] = True  # IoU with 0: 8 / 12
    masks[2, 2:] = True  # disjoint from 0
    keep = class_wise_nms([0.9, 0.8, 0.7], [0, 0, 0], masks=masks, mode="mask", iou_threshold=0.6)
    assert keep.tolist() == [0, 2]
    keep = class_wise_nms([0.9, 0.8, 0.7], [0, 0, 0], masks=masks, mode="mask", iou_threshold=0.7)
    assert keep.tolist() == [0, 1, 2]


def test_matches_torchvision_batched_nms():
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=generator) * 50
    wh = torch.rand(60, 2, generator=generator) * 30 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(60, generator=generator)
    labels = torch.randint(0, 3, (60,), generator=generator)
    expected = torchvision.ops.batched_nms(boxes.double(), scores.double(), labels, 0.5)
    keep = class_wise_nms(scores, labels, boxes=boxes, iou_threshold=0.5)
    assert keep.tolist() == expected.tolist()


def test_bad_mode():
    with pytest.raises(ConfigError):
        class_wise_nms([1.0], [0], boxes=[[0, 0, 1, 1]], mode="circle")
    with pytest.raises(ConfigError):
        class_wise_nms([1.0], [0], mode="mask")


def test_merge_parts_joins_arcs_of_one_object_and_keeps_other_objects():
    from ovseg.models.classifiers import merge_parts

    masks = torch.zeros(5, 10, 10, dtype=torch.bool)
    masks[0, 0:4, 0:6] = True  # arc 1 of a ring (best score)
    masks[1, 2:6, 2:6] = True  # arc 2: half of it overlaps arc 1
    masks[2, 4:8, 2:6] = True  # arc 3: half of it overlaps arc 2, none arc 1
    masks[3, 0:4, 0:6] = True  # the same pixels as arc 1, another label: not joined
    masks[4, 8:10, 0:2] = True  # a separate object of arc 1's label
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = torch.tensor([1, 1, 1, 2, 1])
    merged, merged_scores, merged_labels = merge_parts(masks, scores, labels, 0.5)
    assert merged_labels.tolist() == [1, 2, 1]
    assert merged_scores.tolist() == pytest.approx([0.9, 0.6, 0.5])
    assert torch.equal(merged[0], masks[0] | masks[1] | masks[2])
    assert torch.equal(merged[1], masks[3]) and torch.equal(merged[2], masks[4])
    # a stricter overlap keeps the arcs (half of each overlaps) apart
    assert len(merge_parts(masks, scores, labels, 0.9)[0]) == 5
    with pytest.raises(ConfigError):
        merge_parts(masks, scores, labels, 0.0)


def test_cross_class_nms_drops_the_worse_name_of_one_object():
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, :2] = True
    masks[1, :2, :3] = True  # IoU 6/8 with mask 0, another class, lower score
    masks[2, 3] = True
    order = np.array([0, 1, 2])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert cross_class_nms(order, scores, masks, 0.7).tolist() == [0, 2]
    assert cross_class_nms(order, scores, masks, 0.8).tolist() == [0, 1, 2]
    assert cross_class_nms(order, scores, masks, None) is order
    assert cross_class_nms(np.array([1, 2]), scores, masks, 0.7).tolist() == [1, 2]


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, True, "0.5"])
def test_cross_class_iou_must_be_null_or_an_iou(bad):
    assert check_cross_class_iou(None) is None and check_cross_class_iou(1) == 1.0
    with pytest.raises(ConfigError, match="cross_class_iou"):
        check_cross_class_iou(bad)
