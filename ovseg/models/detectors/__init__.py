"""Open-vocabulary detectors: images + text queries -> scored boxes (see :mod:`.base`).

Built-in (registered in ``ovseg.registry.DETECTORS``): ``OwlViTDetector``, ``Owlv2Detector``,
``GroundingDinoDetector`` (transformers' model classes; transformers is imported when one is
built), ``MdetrDetector`` (the reference modules, released ``.pth`` files) and
``ClipOwlDetector`` (OWL-ViT's heads on ovseg's own open_clip CLIPs, :mod:`.clip_owl`).
"""

from ovseg.models.detectors.base import (
    Detections,
    OpenVocabularyDetector,
    QuerySet,
    as_query_set,
)

__all__ = ["Detections", "OpenVocabularyDetector", "QuerySet", "as_query_set"]
