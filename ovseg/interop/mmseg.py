"""ovseg's semantic pipelines as an mmseg segmentor (``OVSegSegmentor`` in mmseg's ``MODELS``).

mmseg is imported only by :func:`register_mmseg_models` (``import ovseg`` never imports it). In an
mmseg config, import :mod:`ovseg.interop.mmseg_models`, which registers the class::

    custom_imports = dict(imports=['ovseg.interop.mmseg_models'], allow_failed_imports=False)
    model = dict(type='OVSegSegmentor', preset='sclip-vitb16-voc21', device='cuda')
    test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                     dict(type='PackSegInputs')]     # no Resize: ovseg resizes as its preset says
    test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])

Inputs arrive as mmseg's data preprocessor leaves them: ``(N, 3, H, W)`` (or a list of
``(3, H, W)``) tensors with RGB values in [0, 255] (the default preprocessor here turns mmcv's
BGR into RGB and neither normalises nor pads: ovseg normalises with the backbone's own mean and
std). Each image is cropped to its ``img_shape`` (padding of a batch dropped) and segmented by the
ovseg pipeline; the outputs are scaled to ``ori_shape`` if a ``Resize`` ran before (nearest for
labels, bilinear for probabilities), so they align with ``gt_sem_seg``:

* ``pred_sem_seg``: ``(1, H, W)`` int64 class indices in vocabulary order; 255 where the preset
  leaves a pixel unlabelled (mmseg's ``IoUMetric`` counts no class there, as ovseg does);
* ``seg_logits``: ``(C, H, W)`` float32 class probabilities (softmax over the queries, then the
  maximum over each class's synonyms), as the SCLIP-family segmentors store them.

The segmentor has no trainable parameters; ``loss`` and ``extract_feat`` raise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError, MissingDependencyError, OVSegError

REGISTERED_NAME = "OVSegSegmentor"
_CLASS: list[type] = []  # the class, once built (registration happens once per process)


def _import_mmseg() -> tuple[Any, Any, Any, Any]:
    try:
        from mmengine.structures import PixelData
        from mmseg.models.segmentors import BaseSegmentor
        from mmseg.registry import MODELS
        from mmseg.structures import SegDataSample
    except ImportError as exc:
        raise MissingDependencyError(
            f"The mmseg segmentor needs mmsegmentation 1.x with mmcv 2.x ({exc}). Install them "
            "as mmseg's documentation says (`pip install 'ovseg[mmseg]'` and mmcv>=2.0,<2.2 built "
            "for your torch); see the README section on mmsegmentation."
        ) from exc
    return BaseSegmentor, MODELS, SegDataSample, PixelData


def _to_image(tensor: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """``(3, H', W')`` RGB tensor in [0, 255] -> ``(h, w, 3)`` uint8 array cropped to ``shape``."""
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ConfigError(
            f"OVSegSegmentor takes (3, H, W) RGB images, got a tensor of shape "
            f"{tuple(tensor.shape)}."
        )
    h, w = int(shape[0]), int(shape[1])
    crop = tensor[:, :h, :w].detach().float().round().clamp(0, 255).to(torch.uint8)
    return crop.permute(1, 2, 0).cpu().numpy()


def register_mmseg_models() -> type:
    """Build ``OVSegSegmentor`` (a subclass of mmseg's ``BaseSegmentor``), register it in mmseg's
    ``MODELS`` under that name, and return it; later calls return the same class."""
    if _CLASS:
        return _CLASS[0]
    BaseSegmentor, MODELS, SegDataSample, PixelData = _import_mmseg()

    class OVSegSegmentor(BaseSegmentor):
        """An ovseg semantic pipeline behind mmseg's segmentor interface.

        Args:
            preset: an ovseg preset name, YAML path or config mapping with a semantic pipeline.
            vocabulary: class names (ovseg's forms); default: the preset's vocabulary. Its order
                is the label order of ``pred_sem_seg``.
            overrides: ``key=value`` strings applied to the preset.
            device: where ovseg runs the models (``cpu``, ``cuda`` ...).
            return_logits: also store ``seg_logits`` (class probabilities at the label size).
            data_preprocessor: mmseg's preprocessor config; the default converts BGR to RGB
                and leaves values and sizes alone.
        """

        def __init__(
            self,
            preset: str | Mapping[str, Any],
            vocabulary: Any = None,
            overrides: Iterable[str] = (),
            device: str | None = None,
            return_logits: bool = True,
            data_preprocessor: Mapping[str, Any] | None = None,
            init_cfg: Any = None,
        ) -> None:
            from ovseg.api import create_pipeline

            if data_preprocessor is None:
                data_preprocessor = {"type": "SegDataPreProcessor", "bgr_to_rgb": True}
            if isinstance(data_preprocessor, Mapping):  # built in mmseg's scope, not mmengine's
                data_preprocessor = MODELS.build(dict(data_preprocessor))
            super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
            if isinstance(preset, Mapping):
                preset = dict(preset)
            pipeline = create_pipeline(
                preset, vocabulary, task="semantic", overrides=list(overrides), device=device
            )
            if getattr(pipeline, "vocabulary", None) is None:
                raise ConfigError(
                    "OVSegSegmentor needs a vocabulary (its label order): give vocabulary=[...] "
                    "or a preset with one (e.g. sclip-vitb16-voc21)."
                )
            # a plain attribute, not a submodule: ovseg keeps its models on its own device
            self.__dict__["pipeline"] = pipeline
            self.return_logits = bool(return_logits)

        @property
        def class_names(self) -> list[str]:
            return list(self.pipeline.vocabulary.names)

        def _segment(self, image: np.ndarray, out_shape: Sequence[int]) -> tuple[Any, Any]:
            """``(labels (1, H, W) int64, probabilities (C, H, W) float32 or None)`` at
            ``out_shape``."""
            result = self.pipeline(image)
            labels = torch.from_numpy(np.ascontiguousarray(result.sem_seg))[None]
            size = (int(out_shape[0]), int(out_shape[1]))
            if tuple(labels.shape[-2:]) != size:
                labels = F.interpolate(labels[None].float(), size=size, mode="nearest")[0].long()
            if not self.return_logits:
                return labels, None
            if result.probs is None:
                raise ConfigError(
                    "This vocabulary was scored in chunks, so no full probability map exists; "
                    "raise pipeline.inference.score_bytes or build the segmentor with "
                    "return_logits=False."
                )
            probs = torch.from_numpy(np.ascontiguousarray(result.probs)).float()
            if tuple(probs.shape[-2:]) != size:
                probs = F.interpolate(probs[None], size=size, mode="bilinear")[0]
            return labels, probs

        def predict(self, inputs: Any, data_samples: Sequence[Any] | None = None) -> list[Any]:
            """Segment every image of ``inputs``; returns ``data_samples`` (new ones if None)
            with ``pred_sem_seg`` and ``seg_logits`` set."""
            images = list(inputs) if isinstance(inputs, (list, tuple)) else list(inputs.unbind(0))
            if data_samples is None:
                data_samples = []
                for image in images:
                    shape = tuple(image.shape[-2:])
                    data_samples.append(
                        SegDataSample(metainfo={"img_shape": shape, "ori_shape": shape})
                    )
            if len(data_samples) != len(images):
                raise ConfigError(
                    f"{len(images)} images but {len(data_samples)} data samples were given."
                )
            for image, sample in zip(images, data_samples):
                img_shape = sample.metainfo.get("img_shape", tuple(image.shape[-2:]))
                ori_shape = sample.metainfo.get("ori_shape", img_shape)
                labels, probs = self._segment(_to_image(image, img_shape), ori_shape)
                sample.set_data({"pred_sem_seg": PixelData(data=labels)})
                if probs is not None:
                    sample.set_data({"seg_logits": PixelData(data=probs)})
            return list(data_samples)

        def encode_decode(self, inputs: Any, batch_img_metas: Sequence[Mapping[str, Any]]):
            """``(N, C, H, W)`` class probabilities of a batch of same-size images."""
            maps = []
            for image, meta in zip(inputs, batch_img_metas):
                shape = meta.get("img_shape", tuple(image.shape[-2:]))
                maps.append(self._segment(_to_image(image, shape), shape)[1])
            if any(m is None for m in maps):
                raise ConfigError("encode_decode needs return_logits=True.")
            return torch.stack(maps)

        def _forward(self, inputs: Any, data_samples: Sequence[Any] | None = None):
            metas = [
                s.metainfo if s is not None else {"img_shape": tuple(i.shape[-2:])}
                for i, s in zip(inputs, data_samples or [None] * len(inputs))
            ]
            return self.encode_decode(inputs, metas)

        def extract_feat(self, inputs: Any):
            raise OVSegError(
                "OVSegSegmentor has no feature pyramid; use predict(), or the ovseg pipeline "
                "(segmentor.pipeline.encode) for dense CLIP features."
            )

        def loss(self, inputs: Any, data_samples: Any):
            raise OVSegError(
                "OVSegSegmentor is training-free (it has no trainable parameters); train "
                "DenseCLIP heads with `ovseg train` instead."
            )

    MODELS.register_module(name=REGISTERED_NAME, module=OVSegSegmentor, force=True)
    _CLASS.append(OVSegSegmentor)
    return OVSegSegmentor
