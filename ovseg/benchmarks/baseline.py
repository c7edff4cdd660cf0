"""The naive baseline: the reference code's ``forward_slide``, one window at a time.

See :mod:`ovseg.benchmarks` for how it is compared with ovseg's pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.inference.resize import rescale_size
from ovseg.models.backbones.dense_vit import vit_dense_tokens


class NaiveSlidingSegmenter:
    """The reference ``forward_slide`` loop: one window of one image at a time, fp32.

    Args:
        model: the open_clip CLIP model (a ViT image tower), fp32, in eval mode.
        tokenizer: its open_clip tokenizer.
        class_names: one name per class (no synonyms).
        templates: prompt templates (callables ``name -> prompt``).
        mean, std: per-channel normalisation of RGB in [0, 1] (3 floats each).
        dense_mode, naclip_std, keep_residual, keep_ffn: the last-block variant
            (see :mod:`ovseg.models.backbones.dense_vit`).
        short_side, max_long_side, crop, stride: test-time resize and window geometry.
        logit_scale: multiplier of the cosine scores before the softmax.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        class_names: Sequence[str],
        templates: Sequence[Callable[[str], str]],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        dense_mode: str,
        naclip_std: float = 5.0,
        keep_residual: bool | None = None,
        keep_ffn: bool | None = None,
        short_side: int | None,
        max_long_side: int | None,
        crop: int,
        stride: int,
        logit_scale: float,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.dense_mode = dense_mode
        self.naclip_std = naclip_std
        self.keep_residual = keep_residual
        self.keep_ffn = keep_ffn
        self.short_side = short_side
        self.max_long_side = max_long_side
        self.crop = crop
        self.stride = stride
        self.logit_scale = logit_scale
        self.mean = torch.tensor(list(mean), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), device=self.device).view(1, 3, 1, 1)
        self.text_features = self._text_features(tokenizer, class_names, templates)

    @torch.no_grad()
    def _text_features(self, tokenizer, class_names, templates) -> torch.Tensor:
        """``(Q, D)`` fp32: per class, all templates encoded, normalised, averaged, renormalised."""
        features = []
        for name in class_names:
            tokens = tokenizer([template(name) for template in templates]).to(self.device)
            embeds = self.model.encode_text(tokens).float()
            embeds = embeds / embeds.norm(dim=-1, keepdim=True)
            mean = embeds.mean(dim=0)
            features.append(mean / mean.norm())
        return torch.stack(features)

    def _window_logits(self, crop: torch.Tensor) -> torch.Tensor:
        """Normalised crop ``(1, 3, h, w)`` -> cosine scores ``(1, Q, h, w)`` upsampled to it."""
        _, dense = vit_dense_tokens(
            self.model.visual,
            crop,
            self.dense_mode,
            self.naclip_std,
            self.keep_residual,
            self.keep_ffn,
        )
        batch, dim, grid_h, grid_w = dense.shape
        tokens = dense.flatten(2).transpose(1, 2)  # (1, h*w, D), as the reference's patch tokens
        tokens = tokens / tokens.norm(dim=-1, keepdim=True)
        logits = tokens @ self.text_features.T
        logits = logits.permute(0, 2, 1).reshape(batch, -1, grid_h, grid_w)
        return F.interpolate(logits, size=crop.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def segment(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """HWC uint8 RGB -> ``(scores (Q, H, W) float32 cosine, labels (H, W) int64)``.

        ``scores`` are before the logit scale, at input size, on the model's device; ``labels``
        are on the CPU.
        """
        pixels = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        height, width = pixels.shape[-2:]
        size = rescale_size(height, width, self.short_side, self.max_long_side)
        if size != (height, width):
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        img = (pixels - self.mean) / self.std

        h_img, w_img = size
        num_queries = self.text_features.shape[0]
        preds = img.new_zeros((1, num_queries, h_img, w_img))
        count = img.new_zeros((1, 1, h_img, w_img))
        rows = max(h_img - self.crop + self.stride - 1, 0) // self.stride + 1
        cols = max(w_img - self.crop + self.stride - 1, 0) // self.stride + 1
        for row in range(rows):
            for col in range(cols):
                y2 = min(row * self.stride + self.crop, h_img)
                x2 = min(col * self.stride + self.crop, w_img)
                y1, x1 = max(y2 - self.crop, 0), max(x2 - self.crop, 0)
                logits = self._window_logits(img[:, :, y1:y2, x1:x2])
                preds += F.pad(logits, (x1, w_img - x2, y1, h_img - y2))
                count[:, :, y1:y2, x1:x2] += 1
        preds = preds / count
        scores = F.interpolate(preds, size=(height, width), mode="bilinear", align_corners=False)
        probs = torch.softmax(scores[0] * self.logit_scale, dim=0)
        labels = probs.argmax(dim=0)
        return scores[0], labels.cpu()

    def segment_all(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Label maps ``(H, W)`` int64 of every image, one image after the other."""
        return [self.segment(image)[1].numpy() for image in images]


def compare_outputs(
    baseline_scores: torch.Tensor,
    baseline_labels: torch.Tensor,
    ovseg_scores: torch.Tensor,
    ovseg_labels: torch.Tensor,
) -> dict[str, float | int]:
    """Agreement of one image's outputs.

    Args:
        baseline_scores, ovseg_scores: ``(Q, H, W)`` float cosine scores at input size.
        baseline_labels, ovseg_labels: ``(H, W)`` integer labels in ``[0, Q)``.

    Returns ``max_abs_score_diff``; ``mismatched_pixels``; ``unexplained_mismatches``: pixels
    whose labels differ although the baseline's scores of the two labels differ by more than
    ``2 * max_abs_score_diff + 1e-6`` (a float tie cannot explain them).
    """
    baseline_scores = baseline_scores.float().cpu()
    ovseg_scores = ovseg_scores.float().cpu()
    if baseline_scores.shape != ovseg_scores.shape:
        raise AssertionError(
            f"score maps differ in shape: {tuple(baseline_scores.shape)} vs "
            f"{tuple(ovseg_scores.shape)}"
        )
    diff = float((baseline_scores - ovseg_scores).abs().max())
    base = torch.as_tensor(baseline_labels).long().cpu()
    ours = torch.as_tensor(ovseg_labels).long().cpu()
    mismatch = base != ours
    unexplained = 0
    if bool(mismatch.any()):
        base_pick = baseline_scores.gather(0, base[None])[0]
        ours_pick = baseline_scores.gather(0, ours[None])[0]
        gap = (base_pick - ours_pick).abs()
        # Scores that moved by at most `diff` can swap only classes within 2 * diff of each
        # other; 1e-6 covers rounding in the scaled softmax that picks the label.
        unexplained = int((mismatch & (gap > 2 * diff + 1e-6)).sum())
    return {
        "max_abs_score_diff": diff,
        "mismatched_pixels": int(mismatch.sum()),
        "unexplained_mismatches": unexplained,
    }
