"""``Instances`` <-> ``supervision.Detections`` (Roboflow's supervision package).

``to_supervision`` gives ``xyxy`` (the boxes as they are: XYXY in input-image pixels, ``x2, y2``
exclusive edges), ``mask`` ``(N, H, W)`` bool, ``confidence``, ``class_id`` (label index) and
``data["class_name"]`` per detection, with the whole vocabulary in ``metadata["class_names"]``.
``from_supervision`` reads that back, and Detections from elsewhere too: class names come from
``metadata["class_names"]``, else the ``class_names`` argument, else ``data["class_name"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ovseg.errors import ConfigError, MissingDependencyError
from ovseg.structures import Instances


def _sv():
    try:
        import supervision
    except ImportError as exc:
        raise MissingDependencyError(
            "Converting to supervision Detections needs supervision: pip install supervision."
        ) from exc
    return supervision


def to_supervision(instances: Instances):
    """``Instances`` -> ``supervision.Detections`` (see the module docstring)."""
    sv = _sv()
    names = np.array(
        [instances.class_names[int(label)] for label in instances.labels], dtype=object
    )
    return sv.Detections(
        xyxy=instances.boxes.astype(np.float32).reshape(-1, 4),
        mask=instances.masks.copy(),
        confidence=instances.scores.astype(np.float32),
        class_id=instances.labels.astype(np.int64),
        data={"class_name": names},
        metadata={"class_names": list(instances.class_names)},
    )


def from_supervision(detections, class_names: Sequence[str] | None = None) -> Instances:
    """``supervision.Detections`` with masks -> ``Instances``.

    Missing ``confidence`` reads as 1.0. Without ``class_id`` (or class names to index) the
    labels are numbered by first appearance of ``data["class_name"]``.

    Raises:
        ConfigError: the detections have no masks, or no way to name their classes.
    """
    if detections.mask is None:
        raise ConfigError(
            "These Detections have no masks; Instances need them (segment the boxes first, "
            "e.g. with a SAM decoder)."
        )
    masks = np.asarray(detections.mask, dtype=bool)
    count = len(detections)
    names = class_names or detections.metadata.get("class_names")
    data_names = detections.data.get("class_name")
    if names is None and data_names is not None:
        names = list(dict.fromkeys(str(n) for n in data_names))
    if names is None:
        raise ConfigError(
            "Cannot name the classes of these Detections: give class_names=[...] (index order)."
        )
    names = list(names)
    if data_names is not None and (class_names is not None or detections.class_id is None):
        unknown = sorted({str(n) for n in data_names} - set(names))
        if unknown:
            raise ConfigError(f"Detections name classes {unknown} not in class_names {names}.")
        labels = np.array([names.index(str(n)) for n in data_names], dtype=np.int64)
    elif detections.class_id is not None:
        labels = np.asarray(detections.class_id, dtype=np.int64)
        if count and (labels.min() < 0 or labels.max() >= len(names)):
            raise ConfigError(f"class_id {sorted(set(labels.tolist()))} outside {names}.")
    else:
        raise ConfigError("These Detections have neither class_id nor data['class_name'].")
    confidence = (
        np.ones(count, np.float32)
        if detections.confidence is None
        else np.asarray(detections.confidence, np.float32)
    )
    return Instances(
        masks.reshape(count, *masks.shape[1:]),
        np.asarray(detections.xyxy, np.float32),
        confidence,
        labels,
        names,
    )
