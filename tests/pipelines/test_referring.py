"""ReferringSegmenter end to end on a tiny random CLIP and a tiny random SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ovseg.pipelines.referring  # noqa: F401  (registers ReferringSegmenter)
from ovseg.errors import ConfigError, PromptError
from ovseg.models.decoders.sam import SamDecoder
from ovseg.models.prompts import TopKPeakSelector
from ovseg.registry import PIPELINES
from ovseg.structures import ReferringResult
from ovseg.weights import save_state_dict
from tests.models.decoders.sam_tiny import TINY_SAM, random_image, tiny_sam


class RecordingDecoder(SamDecoder):
    """A SamDecoder that remembers the prompts of every predict call."""

    def predict(self, *args, **kwargs):
        self.calls.append(kwargs)
        return super().predict(*args, **kwargs)


def recording_decoder() -> RecordingDecoder:
    decoder = RecordingDecoder.from_model(tiny_sam())
    decoder.calls = []
    return decoder


def tiny_backbone(model_name):
    return {
        "type": "ClipBackbone",
        "model_name": model_name,
        "dense_mode": "sclip",
        "templates": "photo",
    }


@pytest.fixture
def pipeline(tiny_model_names, one_torch_thread):
    torch.manual_seed(0)
    return PIPELINES.build(
        {
            "type": "ReferringSegmenter",
            "backbone": tiny_backbone(tiny_model_names["vit"]),
            "decoder": recording_decoder(),
            "selector": {"type": "SasPSelector", "num_points": 5},
            "inference": {"short_side": None, "max_long_side": None},
        }
    )


def test_phrase_end_to_end(pipeline):
    image = random_image(40, 48)
    result = pipeline(image, "a red square")
    assert isinstance(result, ReferringResult)
    assert result.mask.shape == (40, 48) and result.mask.dtype == bool
    assert result.similarity.shape == (40, 48) and result.similarity.dtype == np.float32
    assert 0.0 <= result.similarity.min() and result.similarity.max() <= 1.0
    assert len(result.points) == 5  # a 5x6 grid down-sampled to 2x3 has 6 cells
    assert result.points.labels[0] == 1
    # the points SAM received are the result's points in SAM's frame (pixel i at i)
    (call,) = pipeline.decoder.calls
    np.testing.assert_allclose(call["point_coords"][0], result.points.coords - 0.5)
    np.testing.assert_array_equal(call["point_labels"][0], result.points.labels)
    # multimask: the kept mask is the one with the highest predicted IoU
    again = pipeline.decoder.predict(
        point_coords=call["point_coords"],
        point_labels=call["point_labels"],
        multimask=True,
        embedding=call["embedding"],
    )
    best = int(again.iou_scores[0].argmax())
    assert result.score == pytest.approx(float(again.iou_scores[0, best]))
    # the same decoder call (same prompts, same batch of one): exact by design
    np.testing.assert_array_equal(result.mask, again.masks[0, best].numpy())
    assert result.meta["mask_index"] == best
    assert result.to_dict()["phrase"] == "a red square"


def test_similarity_is_the_hand_computed_cosine_map(pipeline):
    image = random_image(40, 48, seed=2)
    result = pipeline(image, "sky")
    backbone = pipeline.backbone
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    dense = F.normalize(backbone.encode_dense(backbone.normalize(tensor)), dim=1)[0]
    text = backbone.encode_text(["sky"])[0]
    grid = torch.einsum("dhw,d->hw", dense, text)
    grid = (grid - grid.min()) / (grid.max() - grid.min())
    expected = F.interpolate(grid[None, None], (40, 48), mode="bilinear", align_corners=False)
    # min-max normalised cosines in [0, 1]: float32 rounding (~1e-7) divided by the cosine range
    np.testing.assert_allclose(result.similarity, expected[0, 0].numpy(), atol=1e-5)
    assert result.meta["grid_size"] == [5, 6]


def test_set_image_once_many_phrases(pipeline):
    pipeline.set_image(random_image(40, 48))
    first = pipeline.predict("cat")
    second = pipeline.predict("dog")
    assert first.mask.shape == second.mask.shape == (40, 48)
    assert first.phrase == "cat" and second.phrase == "dog"
    with pytest.raises(PromptError):
        pipeline.predict("  ")


def planted_tokens(size: int, rows: slice, cols: slice, dim: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(dim, generator=generator)
    tokens = 0.1 * torch.randn(dim, size, size, generator=generator)
    tokens[:, rows, cols] += query[:, None, None]
    return query, tokens


def test_embedding_selects_positives_inside_the_planted_region(one_torch_thread):
    segmenter = PIPELINES.build(
        {"type": "ReferringSegmenter", "decoder": recording_decoder(), "backbone": None}
    )
    segmenter.set_image(random_image(64, 64))
    # 8x8 grid over 64x64 pixels: cells 4..7 are pixels 32..63
    query, tokens = planted_tokens(8, slice(4, 8), slice(4, 8))
    result = segmenter.predict_from_embedding(query, tokens)
    positives = result.points.coords[result.points.labels == 1]
    assert len(positives) >= 1
    assert (positives >= 32).all() and (positives < 64).all()
    negatives = result.points.coords[result.points.labels == 0]
    assert len(negatives) >= 1 and not ((negatives >= 32).all(axis=1)).any()
    # a token sequence (h*w, D) in row-major order gives the same points
    sequence = tokens.reshape(16, 64).t()
    same = segmenter.predict_from_embedding(query, sequence)
    np.testing.assert_allclose(same.points.coords, result.points.coords)
    assert result.meta["query"] == "embedding"


def test_embedding_on_a_centre_crop(one_torch_thread):
    segmenter = PIPELINES.build(
        {
            "type": "ReferringSegmenter",
            "decoder": recording_decoder(),
            "selector": {"type": "SasPSelector", "num_points": 30},
        }
    )
    segmenter.set_image(random_image(48, 72))
    # the 8x8 grid covers x in [12, 60); after down-sampling its 4x4 cells are 12 px, so one
    # padding cell on each side; planted cells 4..7 are x in [36, 60), y in [24, 48)
    query, tokens = planted_tokens(8, slice(4, 8), slice(4, 8), seed=3)
    result = segmenter.predict_from_embedding(query, tokens, region="center_crop")
    coords, labels = result.points.coords, result.points.labels
    assert len(result.points) == 16  # padding cells give no points
    assert (coords[:, 0] >= 12).all() and (coords[:, 0] < 60).all()
    positives = coords[labels == 1]
    assert len(positives) >= 1
    assert (positives[:, 0] >= 36).all() and (positives[:, 1] >= 24).all()
    assert result.similarity[:, :12].max() == 0 and result.similarity[:, 60:].max() == 0


def test_built_from_configs_with_top_k(tmp_path, one_torch_thread):
    checkpoint = save_state_dict(tiny_sam().state_dict(), tmp_path / "sam.safetensors")
    segmenter = PIPELINES.build(
        {
            "type": "ReferringSegmenter",
            "decoder": {
                "type": "SamDecoder",
                "model_type": TINY_SAM,
                "checkpoint": str(checkpoint),
            },
            "selector": {"type": "TopKPeakSelector", "k": 2, "radius": 0.5, "threshold": 0.0},
        }
    )
    assert isinstance(segmenter.decoder, SamDecoder)
    assert isinstance(segmenter.selector, TopKPeakSelector)
    with pytest.raises(PromptError):
        segmenter.predict_from_embedding(torch.ones(4), torch.ones(4, 2, 2))
    segmenter.set_image(random_image(32, 32))
    query, tokens = planted_tokens(4, slice(0, 2), slice(0, 2))
    result = segmenter.predict_from_embedding(query, tokens)
    assert result.points.labels.tolist() == [1, 1]
    assert (result.points.coords < 16).all()  # cells 0..1 of 4 over 32 px
    with pytest.raises(ConfigError, match="backbone"):
        segmenter.predict("cat")


def test_predict_batch_batches_sam_encoding_and_keeps_the_masks(pipeline):
    images = [
        random_image(40, 48, seed=1),
        random_image(36, 50, seed=2),
        random_image(44, 40, seed=3),
    ]
    singles = [pipeline(image, "a red square") for image in images]
    pipeline.decoder.image_batch_size = 2
    assert pipeline.encode_group == 2
    calls = []
    embed_batch = pipeline.decoder.embed_batch
    pipeline.decoder.embed_batch = lambda arrays: calls.append(len(arrays)) or embed_batch(arrays)
    batched = pipeline.predict_batch(images, "a red square", workers=2)
    assert calls == [2, 1]  # two images per encoder call, the last one alone
    for single, got in zip(singles, batched, strict=True):
        inter = np.logical_and(single.mask, got.mask).sum()
        union = np.logical_or(single.mask, got.mask).sum()
        assert union == 0 or inter / union >= 0.999
        assert got.score == pytest.approx(single.score, abs=1e-4)
