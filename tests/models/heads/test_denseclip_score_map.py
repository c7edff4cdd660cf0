"""Score maps, score features and the DenseCLIP losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ovseg.models.heads.denseclip import (
    pixel_text_score_map,
    score_map_loss,
    score_text_features,
    segmentation_cross_entropy,
    visual_context,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_score_map_is_the_cosine_of_every_position_and_class():
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(2, 6, 3, 4, generator=g) * 5
    text = torch.randn(2, 5, 6, generator=g) * 3
    scores = pixel_text_score_map(dense, text)
    assert scores.shape == (2, 5, 3, 4)
    b, k, i, j = 1, 3, 2, 1
    z, t = dense[b, :, i, j], text[b, k]
    assert scores[b, k, i, j].item() == pytest.approx(
        float(z @ t / (z.norm() * t.norm())), rel=1e-5
    )
    assert float(scores.abs().max()) <= 1.0 + 1e-6
    # scale-free in both arguments
    torch.testing.assert_close(pixel_text_score_map(dense * 7, text * 0.1), scores)


def test_visual_context_is_global_then_row_major_tokens():
    global_embed = torch.arange(2 * 3).float().reshape(2, 3)
    dense = torch.arange(2 * 3 * 2 * 2).float().reshape(2, 3, 2, 2)
    context = visual_context(global_embed, dense)
    assert context.shape == (2, 5, 3)
    torch.testing.assert_close(context[:, 0], global_embed)
    torch.testing.assert_close(context[1, 1 + 1 * 2 + 0], dense[1, :, 1, 0])


def test_score_features_are_the_score_weighted_mean_of_normalised_text():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(1, 3, 2, 2, generator=g)
    text = torch.randn(1, 3, 4, generator=g)
    features = score_text_features(scores, text)
    assert features.shape == (1, 4, 2, 2)
    t_hat = text[0] / text[0].norm(dim=1, keepdim=True)
    expected = sum(scores[0, k, 1, 0] * t_hat[k] for k in range(3)) / 3
    torch.testing.assert_close(features[0, :, 1, 0], expected)
    # a 1x1 layer on these D channels equals one on the K score channels whose column k is
    # generated from class k's embedding: W (1/K) sum_k s_k t_k = sum_k (W t_k / K) s_k
    weight = torch.randn(5, 4, generator=g)
    generated = (weight @ t_hat.T) / 3  # (5, K)
    torch.testing.assert_close(
        torch.einsum("od,bdhw->bohw", weight, features),
        torch.einsum("ok,bkhw->bohw", generated, scores),
    )


def test_cross_entropy_averages_like_mmseg():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.5]]]])  # (1, 3, 1, 2)
    label = torch.tensor([[[0, 255]]])
    # one labelled pixel; mmseg (avg_non_ignore=False) divides by every pixel (2)
    p0 = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
    assert segmentation_cross_entropy(logits, label).item() == pytest.approx(p0 / 2, rel=1e-5)
    got = segmentation_cross_entropy(logits, label, avg_non_ignore=True).item()
    assert got == pytest.approx(p0, rel=1e-5)
    assert segmentation_cross_entropy(logits, torch.full((1, 1, 2), 255)).item() == 0.0


def test_logits_are_upsampled_to_the_label_size():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 3, 3, generator=g)
    label = torch.randint(0, 4, (2, 12, 12), generator=g)
    label[0, :2] = 255
    up = F.interpolate(logits, size=(12, 12), mode="bilinear", align_corners=False)
    losses = F.cross_entropy(up, label, ignore_index=255, reduction="none")
    assert segmentation_cross_entropy(logits, label).item() == pytest.approx(
        float(losses.sum() / label.numel()), rel=1e-5
    )


def test_aux_loss_is_weighted_cross_entropy_of_scores_over_tau():
    score_map = torch.tensor([[[[0.3]], [[0.1]]]])  # (1, 2, 1, 1) cosines
    label = torch.tensor([[[1, 1], [0, 255]]])  # (1, 2, 2): upsampled 1x1 map, 4 pixels
    a, b = 0.3 / 0.07, 0.1 / 0.07
    nll_0 = -math.log(math.exp(a) / (math.exp(a) + math.exp(b)))
    nll_1 = -math.log(math.exp(b) / (math.exp(a) + math.exp(b)))
    expected = 0.4 * (2 * nll_1 + nll_0) / 4
    got = score_map_loss(score_map, label, tau=0.07, weight=0.4)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    doubled = score_map_loss(score_map, label, tau=0.07, weight=0.8).item()
    assert doubled == pytest.approx(2 * expected, rel=1e-5)
