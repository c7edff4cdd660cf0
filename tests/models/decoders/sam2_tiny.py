"""Tiny random SAM 2.1 models for CPU tests (shared test helper).

``TINY_SAM2`` shrinks sam2's own ``sam2.1_hiera_t`` config: a 128 px input, a Hiera of width 16
with one block per stage but three in the third (a global-attention block among windowed
ones), a 32-d FPN / prompt / mask decoder, and a one-layer memory path (unused by images but
part of every checkpoint). ``tiny_sam2`` scales the untrained output layers as ``tiny_sam``
does, so that logits reach a few units and predicted IoUs spread.
"""

from __future__ import annotations

import numpy as np
import torch
from sam2.sam2_image_predictor import SAM2ImagePredictor

from ovseg.models.decoders.sam2_build import build_sam2_model

TINY_SAM2 = {
    "model.image_size": 128,
    "model.image_encoder.trunk.embed_dim": 16,
    "model.image_encoder.trunk.num_heads": 1,
    "model.image_encoder.trunk.stages": [1, 1, 3, 1],
    "model.image_encoder.trunk.global_att_blocks": [3],
    "model.image_encoder.trunk.window_spec": [4, 4, 4, 2],
    "model.image_encoder.trunk.window_pos_embed_bkg_spatial_size": [4, 4],
    "model.image_encoder.neck.d_model": 32,
    "model.image_encoder.neck.position_encoding.num_pos_feats": 32,
    "model.image_encoder.neck.backbone_channel_list": [128, 64, 32, 16],
    "model.memory_attention.d_model": 32,
    "model.memory_attention.num_layers": 1,
    "model.memory_attention.layer.d_model": 32,
    "model.memory_attention.layer.dim_feedforward": 32,
    "model.memory_attention.layer.self_attention.embedding_dim": 32,
    "model.memory_attention.layer.self_attention.feat_sizes": [8, 8],
    "model.memory_attention.layer.cross_attention.embedding_dim": 32,
    "model.memory_attention.layer.cross_attention.feat_sizes": [8, 8],
    "model.memory_attention.layer.cross_attention.kv_in_dim": 16,
    "model.memory_encoder.out_dim": 16,
    "model.memory_encoder.position_encoding.num_pos_feats": 16,
    "model.memory_encoder.fuser.layer.dim": 32,
    "model.memory_encoder.fuser.num_layers": 1,
}

#: ``TINY_SAM2`` with a memory encoder that runs (its input width is the 32-d FPN's), for video
TINY_SAM2_VIDEO = {
    **TINY_SAM2,
    "model.memory_encoder.in_dim": 32,
    "model.memory_encoder.mask_downsampler.embed_dim": 32,
}


def tiny_sam2(seed: int = 1, overrides: dict | None = None) -> torch.nn.Module:
    """A random tiny SAM 2.1 (``SAM2Base``) with varied masks and scores, in eval mode."""
    torch.manual_seed(seed)
    model = build_sam2_model("sam2.1_hiera_t", overrides=overrides or TINY_SAM2, random_init=True)
    decoder = model.sam_mask_decoder
    with torch.no_grad():
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(300.0)
        head = decoder.iou_prediction_head.layers[-1]
        head.weight.mul_(4.0)
    return model


def reference_predictor(model, image, **kwargs) -> SAM2ImagePredictor:
    predictor = SAM2ImagePredictor(model, **kwargs)
    # the predictor hard-codes the feature sizes of a 1024 px input; the tiny model has 128 px
    size = model.image_size
    predictor._bb_feat_sizes = [(size // 4,) * 2, (size // 8,) * 2, (size // 16,) * 2]
    predictor.set_image(image)
    return predictor


def _label_8_connected(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and per-pixel component areas by flood fill (8 neighbours), from first principles."""
    height, width = mask.shape
    labels = np.zeros((height, width), dtype=np.int64)
    areas = np.zeros((height, width), dtype=np.int64)
    for y in range(height):
        for x in range(width):
            if not mask[y, x] or labels[y, x]:
                continue
            label = labels.max() + 1
            stack, members = [(y, x)], []
            labels[y, x] = label
            while stack:
                cy, cx = stack.pop()
                members.append((cy, cx))
                for ny in range(max(cy - 1, 0), min(cy + 2, height)):
                    for nx in range(max(cx - 1, 0), min(cx + 2, width)):
                        if mask[ny, nx] and not labels[ny, nx]:
                            labels[ny, nx] = label
                            stack.append((ny, nx))
            for cy, cx in members:
                areas[cy, cx] = len(members)
    return labels, areas


def reference_connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What sam2's CUDA ``get_connected_components`` returns, for (N, 1, H, W) masks."""
    out = [_label_8_connected(m[0].numpy().astype(bool)) for m in mask.cpu()]
    labels = torch.tensor(np.stack([o[0] for o in out]))[:, None]
    areas = torch.tensor(np.stack([o[1] for o in out]))[:, None]
    return labels.to(torch.int32), areas.to(torch.int32)
