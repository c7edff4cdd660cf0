"""The prompted-decoder helpers shared by the SAM family."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from ovseg.models.decoders.prompted import BOX_PROMPTS_PER_CALL, masks_for_boxes


class _BoxDecoder:
    """Fills each box (integer XYXY) as its one mask; IoU = the box's index / 1000."""

    def __init__(self):
        self.calls = []

    def predict(self, boxes, multimask, embedding):
        assert multimask is False and embedding == "kept"
        self.calls.append(len(boxes))
        masks = torch.zeros(len(boxes), 1, 6, 8, dtype=torch.bool)
        for index, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=int)):
            masks[index, 0, y1:y2, x1:x2] = True
        ious = torch.tensor([[float(b[0]) / 1000] for b in boxes])
        return SimpleNamespace(masks=masks, iou_scores=ious)


def test_masks_for_boxes_calls_the_decoder_in_chunks_and_keeps_the_order():
    count = BOX_PROMPTS_PER_CALL + 3
    boxes = np.array([[i % 7, 1, i % 7 + 1, 3] for i in range(count)], dtype=np.float64)
    decoder = _BoxDecoder()
    masks, ious = masks_for_boxes(decoder, "kept", boxes, (6, 8))
    assert decoder.calls == [BOX_PROMPTS_PER_CALL, 3]
    assert masks.shape == (count, 6, 8) and masks.dtype == torch.bool
    for index, (x1, _, _, _) in enumerate(boxes.astype(int)):
        assert masks[index, 1:3, x1].all() and masks[index].sum() == 2
    np.testing.assert_allclose(ious.numpy(), boxes[:, 0] / 1000, rtol=1e-6)
    empty_masks, empty_ious = masks_for_boxes(decoder, "kept", np.zeros((0, 4)), (6, 8))
    assert empty_masks.shape == (0, 6, 8) and empty_ious.shape == (0,)
    assert decoder.calls == [BOX_PROMPTS_PER_CALL, 3]  # no call for no box
