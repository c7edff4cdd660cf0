"""Import this module (mmengine ``custom_imports``) to register ``OVSegSegmentor`` in mmseg's
``MODELS``; it imports mmseg. See :mod:`ovseg.interop.mmseg`."""

from ovseg.interop.mmseg import register_mmseg_models

OVSegSegmentor = register_mmseg_models()

__all__ = ["OVSegSegmentor"]
