"""SAM 2 memory tracking: parity with sam2's video predictor and a bounded memory bank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.errors import ConfigError
from ovseg.fileio import save_jpeg
from ovseg.models.decoders.sam2_build import create_sam2, sam2_config
from ovseg.models.decoders.sam2_video import Sam2MemoryTracker, fill_holes
from tests.models.decoders.sam2_tiny import TINY_SAM2_VIDEO, tiny_sam2


def _clip(count: int = 5, size: int = 48) -> list[np.ndarray]:
    """A bright square moving right over a textured background."""
    rng = np.random.default_rng(0)
    frames = []
    for t in range(count):
        frame = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        frame[14:30, 6 + 3 * t : 22 + 3 * t] = (230, 40, 40)
        frames.append(frame)
    return frames


def _reference_predictor(model):
    """sam2's own SAM2VideoPredictor with the same tiny config and weights."""
    overrides = {
        **TINY_SAM2_VIDEO,
        "model._target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
        "model.binarize_mask_from_pts_for_mem_enc": True,
        "model.fill_hole_area": 0,  # its hole filling needs sam2's CUDA extension
    }
    predictor = create_sam2(sam2_config("sam2.1_hiera_t", overrides))
    predictor.load_state_dict(model.state_dict())
    return predictor.eval()


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return tiny_sam2(seed=3, overrides=TINY_SAM2_VIDEO)


def test_propagation_matches_sam2_video_predictor(tmp_path, model):
    frames = _clip(5)
    for i, frame in enumerate(frames):
        save_jpeg(tmp_path / f"{i:05d}.jpg", frame)
    # both read the same decoded JPEGs
    from ovseg.io import read_image

    decoded = [read_image(tmp_path / f"{i:05d}.jpg") for i in range(len(frames))]
    mask = np.zeros(frames[0].shape[:2], dtype=bool)
    mask[14:30, 6:22] = True

    predictor = _reference_predictor(model)
    state = predictor.init_state(str(tmp_path))
    predictor.add_new_mask(state, frame_idx=0, obj_id=1, mask=mask)
    expected = {idx: masks[0, 0].float() for idx, _, masks in predictor.propagate_in_video(state)}

    tracker = Sam2MemoryTracker(model, fill_hole_area=0, num_frames=len(frames))
    ours = {}
    for index, image in enumerate(decoded):
        features = tracker.encode_frame(index, image)
        if index == 0:
            tracker.add_object(1, features, mask)
        ours[index] = tracker.propagate(features)[1][0]
    assert model.binarize_mask_from_pts_for_mem_enc is False  # restored after use
    for index in range(len(frames)):
        scale = expected[index].abs().max().item()
        torch.testing.assert_close(ours[index], expected[index], atol=1e-4 * scale, rtol=1e-4)


def test_memory_bank_stays_bounded(model):
    tracker = Sam2MemoryTracker(model, fill_hole_area=4)
    frames = _clip(3, 32) * 8  # 24 frames
    mask = np.zeros((32, 32), dtype=bool)
    mask[14:30, 6:22] = True
    held = []
    for index, image in enumerate(frames):
        features = tracker.encode_frame(index, image)
        if index == 0:
            tracker.add_object(7, features, mask)
        logits, score = tracker.propagate(features)[7]
        assert logits.shape == (32, 32) and np.isfinite(score)
        held.append(tracker.memory_frames())
    assert tracker.horizon < len(frames)
    assert max(held) == 1 + tracker.horizon  # the conditioning frame + the readable window
    assert min(tracker.objects[7].non_cond) == len(frames) - 1 - tracker.horizon + 1


def test_fill_holes_and_refusals(model):
    logits = torch.full((1, 1, 6, 6), 2.0)
    logits[0, 0, 2, 2] = -1.0  # a 1-pixel hole
    logits[0, 0, :, 5] = -1.0  # a 6-pixel background strip
    filled = fill_holes(logits, 2)
    assert filled[0, 0, 2, 2] == pytest.approx(0.1) and filled[0, 0, 0, 5] == -1.0
    with pytest.raises(ConfigError, match="SAM 2"):
        Sam2MemoryTracker(torch.nn.Linear(2, 2))
    tracker = Sam2MemoryTracker(model)
    features = tracker.encode_frame(0, _clip(1, 32)[0])
    tracker.add_object(1, features, np.ones((32, 32), dtype=bool))
    with pytest.raises(ConfigError, match="already"):
        tracker.add_object(1, features, np.ones((32, 32), dtype=bool))
