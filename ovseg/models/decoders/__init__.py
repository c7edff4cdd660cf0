"""SAM mask decoders: architectures, the prompted adapter, automatic proposals, training."""

from ovseg.models.decoders.automatic import AutomaticMaskSettings, MaskProposals
from ovseg.models.decoders.sam import MaskPrediction, SamDecoder
from ovseg.models.decoders.sam_build import SamArchitecture, build_sam, register_sam_architecture

__all__ = [
    "AutomaticMaskSettings",
    "MaskPrediction",
    "MaskProposals",
    "SamArchitecture",
    "SamDecoder",
    "build_sam",
    "register_sam_architecture",
]
