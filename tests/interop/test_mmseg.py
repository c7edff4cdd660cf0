"""OVSegSegmentor against real mmseg: registry, test_step, SegDataSample fields, IoUMetric.

Skipped (with the import error as reason) where mmsegmentation 1.x or mmcv 2.x cannot be
imported; see tests/interop/test_mmseg_optional.py for what runs without them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.errors import MissingDependencyError, OVSegError
from ovseg.evaluation.semseg import SemSegMetric

pytestmark = pytest.mark.mmseg

try:
    from ovseg.interop.mmseg import register_mmseg_models

    register_mmseg_models()
except MissingDependencyError as exc:
    pytest.skip(
        f"mmsegmentation 1.x with mmcv 2.x cannot be imported here: {exc.__cause__}",
        allow_module_level=True,
    )

from mmengine.structures import PixelData  # noqa: E402
from mmseg.evaluation import IoUMetric  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

VOCAB = ["cat", "dog|puppy", "sofa"]


def tiny_preset(model_name: str) -> dict:
    return {
        "pipeline": {
            "type": "SemanticSegmenter",
            "backbone": {"type": "ClipBackbone", "model_name": model_name,
                         "dense_mode": "sclip", "templates": "photo"},
            "inference": {"mode": "slide", "crop_size": 32, "stride": 16},
        }
    }  # fmt: skip


@pytest.fixture(scope="module")
def segmentor(tiny_model_names, one_torch_thread):
    torch.manual_seed(0)
    return MODELS.build(
        {"type": "OVSegSegmentor", "preset": tiny_preset(tiny_model_names["vit"]),
         "vocabulary": VOCAB}
    )  # fmt: skip


def _batch(images, labels):
    """mmseg's test batch: BGR uint8 (3, H, W) tensors and data samples with ground truth."""
    inputs = [torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1) for img in images]
    samples = []
    for img, label in zip(images, labels):
        sample = SegDataSample(metainfo={"img_shape": img.shape[:2], "ori_shape": img.shape[:2]})
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(label)[None])
        samples.append(sample)
    return {"inputs": inputs, "data_samples": samples}


def test_test_step_matches_the_ovseg_pipeline_and_iou_metric(segmentor):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)]
    expected = [segmentor.pipeline(img) for img in images]
    labels = []
    for result in expected:  # ground truth: the prediction, partly changed and partly ignored
        label = result.sem_seg.copy()
        label[:10] = (label[:10] + 1) % 3
        label[-5:] = 255
        labels.append(label)
    batch = _batch(images, labels)
    outputs = segmentor.test_step(batch)
    metric_ovseg = SemSegMetric(3, ["cat", "dog", "sofa"])
    for out, result, label in zip(outputs, expected, labels):
        assert isinstance(out, SegDataSample)
        assert out.pred_sem_seg.data.shape == (1, 40, 56)
        assert out.pred_sem_seg.data.dtype == torch.int64
        np.testing.assert_array_equal(out.pred_sem_seg.data[0].numpy(), result.sem_seg)
        assert out.seg_logits.data.shape == (3, 40, 56)
        torch.testing.assert_close(out.seg_logits.data, torch.from_numpy(result.probs))
        metric_ovseg.process(result.sem_seg, label)
    iou = IoUMetric(iou_metrics=["mIoU"])
    iou.dataset_meta = {"classes": segmentor.class_names}
    iou.process(batch, [o.to_dict() for o in outputs])
    mmseg_numbers = iou.compute_metrics(iou.results)
    ours = metric_ovseg.compute()
    for key in ("aAcc", "mIoU", "mAcc"):  # IoUMetric rounds to 2 decimals
        assert mmseg_numbers[key] == pytest.approx(round(ours[key], 2), abs=1e-9), key
    assert 0 < ours["mIoU"] < 100


def test_outputs_follow_ori_shape_and_padding(segmentor):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    padded = torch.zeros(3, 48, 64)
    padded[:, :40, :56] = torch.from_numpy(image).permute(2, 0, 1).float()
    sample = SegDataSample(metainfo={"img_shape": (40, 56), "ori_shape": (80, 112)})
    (out,) = segmentor.predict(padded[None], [sample])
    labels = torch.from_numpy(segmentor.pipeline(image).sem_seg)
    upsampled = F.interpolate(labels[None, None].float(), size=(80, 112), mode="nearest")
    torch.testing.assert_close(out.pred_sem_seg.data, upsampled[0].long())
    assert out.seg_logits.data.shape == (3, 80, 112)


def test_training_is_refused(segmentor):
    with pytest.raises(OVSegError, match="training-free"):
        segmentor.loss(torch.zeros(1, 3, 8, 8), [])
