"""Open-vocabulary detectors: images + text queries -> scored boxes (see :mod:`.base`).

Built-in (registered in ``ovseg.registry.DETECTORS``): ``OwlViTDetector``, ``Owlv2Detector``,
``GroundingDinoDetector`` (transformers' model classes) and ``MdetrDetector`` (the reference
modules, released ``.pth`` files); transformers is imported when one is built.
"""

from ovseg.models.detectors.base import (
    Detections,
    OpenVocabularyDetector,
    QuerySet,
    as_query_set,
)

__all__ = ["Detections", "OpenVocabularyDetector", "QuerySet", "as_query_set"]
