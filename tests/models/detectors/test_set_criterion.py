"""OWL-ViT's set loss: GIoU, focal loss, the Hungarian match and the normalised losses."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import generalized_box_iou as tv_giou
from torchvision.ops import sigmoid_focal_loss as tv_focal

from ovseg.models.detectors.set_criterion import (
    SetCriterion,
    box_cxcywh_to_xyxy,
    focal_match_cost,
    generalized_box_iou,
    hungarian_match,
    sigmoid_focal_loss,
)
from tests.tolerance import assert_close_to_scale


def random_boxes(count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(count, 2, generator=g) * 0.6 + 0.2
    size = torch.rand(count, 2, generator=g) * 0.3 + 0.05
    return torch.cat([centre, size], dim=1)


def test_giou_matches_torchvision_and_known_values():
    a, b = box_cxcywh_to_xyxy(random_boxes(5, 0)), box_cxcywh_to_xyxy(random_boxes(7, 1))
    assert_close_to_scale(generalized_box_iou(a, b), tv_giou(a, b), 1e-6)
    unit = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    apart = torch.tensor([[2.0, 0.0, 3.0, 1.0]])  # same size, a gap of 1: enclosing area 3
    assert generalized_box_iou(unit, unit).item() == pytest.approx(1.0)
    assert generalized_box_iou(unit, apart).item() == pytest.approx(-1 / 3)


def test_focal_loss_matches_torchvision():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(2)) * 3
    targets = (torch.rand(6, 4, generator=torch.Generator().manual_seed(3)) > 0.7).float()
    want = tv_focal(logits, targets, alpha=0.3, gamma=2.0, reduction="none")
    assert_close_to_scale(sigmoid_focal_loss(logits, targets, 0.3, 2.0), want, 1e-6)


def test_focal_match_cost_is_lowest_for_confident_right_class():
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    cost = focal_match_cost(logits, torch.tensor([0, 1]))
    assert cost[0, 0] < cost[1, 0] and cost[1, 1] < cost[0, 1]


def test_hungarian_match_finds_the_permutation():
    targets = random_boxes(3, 4)
    order = torch.tensor([2, 0, 1])
    predictions = torch.cat([targets[order], random_boxes(2, 5)])  # 5 predictions, 3 objects
    logits = torch.full((5, 3), -4.0)
    classes = torch.tensor([0, 1, 2])
    pred_idx, tgt_idx = hungarian_match(logits, predictions, classes, targets)
    assert pred_idx.tolist() == [0, 1, 2]
    assert tgt_idx.tolist() == order.tolist()
    empty = hungarian_match(logits, predictions, classes[:0], targets[:0])
    assert [len(x) for x in empty] == [0, 0]


def test_loss_parts_are_normalised_per_image_and_perfect_boxes_cost_nothing():
    criterion = SetCriterion()
    targets = random_boxes(2, 6)
    boxes = torch.stack([torch.cat([targets, random_boxes(3, 7)])])  # (1, 5, 4)
    logits = torch.full((1, 5, 4), -20.0)
    logits[0, 0, 1] = logits[0, 1, 3] = 20.0
    out = criterion(logits, boxes, [torch.tensor([1, 3])], [targets])
    assert out["loss_l1"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["loss_class"].item() < 1e-6
    # a wrong class on the matched box: exactly the focal terms of its two entries, over 2 objects
    wrong = logits.clone()
    wrong[0, 0, 1], wrong[0, 0, 2] = -20.0, 20.0
    out = criterion(wrong, boxes, [torch.tensor([1, 3])], [targets])
    expected = (
        sigmoid_focal_loss(torch.tensor(-20.0), torch.tensor(1.0))
        + sigmoid_focal_loss(torch.tensor(20.0), torch.tensor(0.0))
    ) / 2
    assert out["loss_class"].item() == pytest.approx(expected.item(), rel=1e-3)


def test_images_count_equally_and_an_empty_image_has_only_a_class_loss():
    criterion = SetCriterion(weights=(1.0, 5.0, 2.0))
    boxes = torch.stack([random_boxes(4, 8), random_boxes(4, 9)])
    logits = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(10))
    targets = [random_boxes(3, 11), random_boxes(0, 12)]
    classes = [torch.tensor([0, 2, 1]), torch.zeros(0, dtype=torch.long)]
    both = criterion(logits, boxes, classes, targets)
    first = criterion(logits[:1], boxes[:1], classes[:1], targets[:1])
    second = criterion(logits[1:], boxes[1:], classes[1:], targets[1:])
    for key in ("loss_class", "loss_l1", "loss_giou"):
        assert both[key].item() == pytest.approx((first[key] + second[key]).item() / 2, rel=1e-5)
    assert second["loss_l1"].item() == 0.0 and second["loss_giou"].item() == 0.0
    total = both["loss_class"] + 5.0 * both["loss_l1"] + 2.0 * both["loss_giou"]
    assert both["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_loss_backpropagates_to_logits_and_boxes():
    logits = torch.randn(1, 6, 2, requires_grad=True)
    boxes = random_boxes(6, 13)[None].requires_grad_(True)
    out = SetCriterion()(logits, boxes, [torch.tensor([1])], [random_boxes(1, 14)])
    out["loss"].backward()
    assert logits.grad.abs().sum() > 0 and boxes.grad.abs().sum() > 0
