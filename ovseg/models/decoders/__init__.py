"""SAM-family mask decoders: architectures, the prompted adapters, automatic proposals, training.

``SamDecoder`` (segment-anything), ``Sam2Decoder`` (SAM 2.1, needs the ``sam2`` package) and
``HqSamDecoder`` (HQ-SAM, needs ``segment-anything-hq``) share one interface; the optional
packages are imported only when such a decoder is built.
"""

from ovseg.models.decoders.automatic import AutomaticMaskSettings, MaskProposals
from ovseg.models.decoders.prompted import MaskPrediction, PromptedMaskDecoder
from ovseg.models.decoders.sam import SamDecoder
from ovseg.models.decoders.sam2 import Sam2Decoder, Sam2MaskSettings
from ovseg.models.decoders.sam_build import SamArchitecture, build_sam, register_sam_architecture
from ovseg.models.decoders.sam_hq import HqMaskSettings, HqSamDecoder

__all__ = [
    "AutomaticMaskSettings",
    "HqMaskSettings",
    "HqSamDecoder",
    "MaskPrediction",
    "MaskProposals",
    "PromptedMaskDecoder",
    "Sam2Decoder",
    "Sam2MaskSettings",
    "SamArchitecture",
    "SamDecoder",
    "build_sam",
    "register_sam_architecture",
]
