"""The mmseg adapter is optional: nothing imports mmseg until it is asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ovseg.errors import MissingDependencyError
from ovseg.interop import mmseg as adapter


def test_module_import_does_not_import_mmseg():
    code = "import sys, ovseg.interop.mmseg; print('mmseg' in sys.modules, 'mmcv' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_mmseg_is_a_typed_error(monkeypatch):
    monkeypatch.setattr(adapter, "_CLASS", [])
    for name in ("mmseg", "mmseg.registry", "mmseg.models", "mmseg.models.segmentors"):
        monkeypatch.setitem(sys.modules, name, None)  # import of these now raises ImportError
    with pytest.raises(MissingDependencyError, match="mmsegmentation 1.x with mmcv 2.x"):
        adapter.register_mmseg_models()
