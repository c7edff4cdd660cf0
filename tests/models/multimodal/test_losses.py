from __future__ import annotations

import torch
import torch.nn.functional as F

from ovseg.models.multimodal.losses import (
    dice_loss,
    grid_occupancy,
    sigmoid_bce_loss,
    similarity_ce_loss,
)


def test_bce_is_the_mean_over_pixels_summed_over_masks():
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.0]], [[-3.0, 1.0], [1.0, 1.0]]])
    targets = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]]])
    per_mask = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean((1, 2))
    torch.testing.assert_close(sigmoid_bce_loss(logits, targets, 2), per_mask.sum() / 2)


def test_dice_by_hand():
    logits = torch.zeros(1, 2, 2)  # p = 0.5 everywhere
    targets = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # 1 - 2 * (0.5 + 0.5) / (2 + 2) = 0.5 (the scale and eps change it by ~1e-3 at most)
    torch.testing.assert_close(dice_loss(logits, targets, 1), torch.tensor(0.5), atol=2e-3, rtol=0)
    perfect = torch.where(targets > 0, 30.0, -30.0)
    assert float(dice_loss(perfect, targets, 1)) < 1e-3
    # an empty mask predicted empty: eps / eps
    assert float(dice_loss(torch.full((1, 2, 2), -30.0), torch.zeros(1, 2, 2), 1)) < 1e-3


def test_grid_occupancy_is_the_covered_fraction_of_each_cell():
    mask = torch.zeros(6, 8)
    mask[0:3, 1:4] = 1  # the left 4 x 3 block of a 6 x 8 image, 1 column missing
    occupancy = grid_occupancy(mask, None, (2, 2))
    torch.testing.assert_close(occupancy, torch.tensor([9 / 12, 0.0, 0.0, 0.0]))
    # a grid on the centred 6 x 6 square (x 1..7): the block fills its top-left cell
    occupancy = grid_occupancy(mask, (1.0, 0.0, 7.0, 6.0), (2, 2))
    torch.testing.assert_close(occupancy, torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_similarity_ce_loss_by_hand_and_its_direction():
    similarity = torch.tensor([0.0, 0.0, 0.0, 0.0], requires_grad=True)
    occupancy = torch.tensor([0.5, 0.5, 0.0, 0.0])
    log_probs = F.log_softmax(similarity.detach(), 0)
    expected = -(0.5 * log_probs[0] + 0.5 * log_probs[1])
    loss = similarity_ce_loss(similarity, occupancy)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    # from a flat map: raising a target cell lowers the loss, raising an empty one raises it
    torch.testing.assert_close(similarity.grad, torch.tensor([-0.25, -0.25, 0.25, 0.25]))
    assert similarity.grad[0] < 0 and similarity.grad[1] < 0 and similarity.grad[2] > 0
    empty = similarity_ce_loss(similarity, torch.zeros(4))
    assert float(empty.detach()) == 0.0 and empty.requires_grad
