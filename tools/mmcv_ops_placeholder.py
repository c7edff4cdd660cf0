"""Let mmsegmentation import on top of mmcv-lite, for testing ovseg's mmseg adapter without
building mmcv's compiled ops.

mmseg 1.x imports ``mmcv.ops`` while importing ``mmseg.models`` (``mmseg/utils/
mask_classification.py``), and ``mmcv.ops`` loads the compiled extension ``mmcv._ext``, which
mmcv-lite does not have. This script writes ``mmcv/_ext.py`` into the installed mmcv-lite: a
module whose every function raises ``RuntimeError`` when called, so mmseg's Python code imports
and any use of a compiled op fails loudly. ``OVSegSegmentor``, mmseg's ``BaseSegmentor``,
``SegDataPreProcessor`` and ``IoUMetric`` use none of them.

    pip install mmcv-lite==2.1.0 mmsegmentation==1.2.2 prettytable
    python tools/mmcv_ops_placeholder.py
    python -m pytest -q -m mmseg tests/interop

It refuses to touch an mmcv that has the real extension. Do not use it where mmseg models with
compiled ops (deformable convolutions, point sampling ...) must run: build mmcv instead.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PLACEHOLDER = '''"""Placeholder for mmcv's compiled extension (tools/mmcv_ops_placeholder.py in ovseg)."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def op(*args, **kwargs):
        raise RuntimeError(f"mmcv op {name} needs mmcv's compiled extension, which is not built")

    return op
'''


def main() -> int:
    spec = importlib.util.find_spec("mmcv")
    if spec is None or not spec.submodule_search_locations:
        print("mmcv is not installed; pip install mmcv-lite==2.1.0 first.", file=sys.stderr)
        return 2
    folder = Path(next(iter(spec.submodule_search_locations)))
    compiled = [p for p in folder.glob("_ext*") if p.suffix in (".so", ".pyd")]
    if compiled:
        print(f"{folder} has the compiled extension ({compiled[0].name}); nothing to do.")
        return 0
    target = folder / "_ext.py"
    if target.exists() and target.read_text(encoding="utf-8") != PLACEHOLDER:
        print(f"{target} exists and is not this placeholder; left unchanged.", file=sys.stderr)
        return 2
    tmp = target.with_suffix(".py.tmp")
    tmp.write_text(PLACEHOLDER, encoding="utf-8")
    tmp.replace(target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
