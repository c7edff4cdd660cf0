from __future__ import annotations

import torch
import torch.nn.functional as F

from ovseg.models.multimodal.losses import dice_loss, sigmoid_bce_loss


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
