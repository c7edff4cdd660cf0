"""Config-driven extension points: ``custom_imports`` and ``custom_model_configs``.

``custom_imports: [my_pkg.my_heads]`` imports modules that register components.
``custom_model_configs: PATH`` (a JSON file or folder, or a list) registers open_clip model
configs, so architectures defined outside open_clip can be named in ``model_name``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ovseg.errors import ConfigError


def _as_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, (str, Path)):
        return [str(value)]
    return [str(v) for v in value]


def load_plugins(cfg: Mapping[str, Any]) -> None:
    """Apply a config's ``custom_imports`` and ``custom_model_configs`` (idempotent)."""
    for module in _as_list(cfg.get("custom_imports")):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"custom_imports: cannot import {module!r}: {exc}") from exc
    paths = _as_list(cfg.get("custom_model_configs"))
    if paths:
        import open_clip

        for path in paths:
            if not Path(path).exists():
                raise ConfigError(f"custom_model_configs: {path} does not exist.")
            open_clip.add_model_config(path)
