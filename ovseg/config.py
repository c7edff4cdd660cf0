"""YAML configs on OmegaConf: ``_base_`` inheritance, ``key=value`` overrides, resolved dumps.

A config file may name bases::

    _base_: [../_base_/clip_vitb16.yaml, settings.yaml]   # paths relative to this file
    _base_: shapes-tiny                                   # or a packaged preset's name

Bases merge in order, then the file itself on top. A mapping whose ``type`` differs from the
base's ``type`` replaces the base mapping instead of merging into it (so a child can swap a
component without inheriting the old component's keyword arguments). Presets shipped in the
package (``ovseg/model_zoo/presets/<name>.yaml``) are addressed by bare name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from ovseg.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "model_zoo" / "presets"
BASE_KEY = "_base_"

# Every top-level key a preset, a shipped config or the code reads; others are refused (typos).
KNOWN_TOP_LEVEL_KEYS = frozenset(
    {
        BASE_KEY,
        "_source_",  # bookkeeping: where a loaded config came from
        "benchmark",
        "custom_imports",
        "custom_model_configs",
        "data",
        "database",
        "evaluation",
        "model",
        "optimizer",
        "pipeline",
        "pipelines",
        "schedule",
        "seed",
        "task",
        "train",
        "vocab_free",
        "vocab_free_instance",
        "video",
        "vocabulary",
        "work_dir",
    }
)


def list_presets() -> list[str]:
    """Names of the presets shipped in the package, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """Return the YAML file for a preset name or a path; unknown names list close presets."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    import difflib

    close = difflib.get_close_matches(str(name_or_path), list_presets(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"No preset or config file named {str(name_or_path)!r}.{hint} "
        "Run `ovseg list presets` to see the presets, or pass a path to a .yaml file."
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping at the top level, not {type(data).__name__}."
        )
    return data


def merge_configs(base: Any, child: Any) -> Any:
    """Merge ``child`` into ``base`` (plain containers); a changed ``type`` replaces the mapping."""
    if isinstance(base, Mapping) and isinstance(child, Mapping):
        if "type" in child and child.get("type") != base.get("type"):
            return dict(child)
        merged = dict(base)
        for key, value in child.items():
            merged[key] = merge_configs(base[key], value) if key in base else value
        return merged
    return child


def _load_with_bases(path: Path, stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"Config inheritance loops: {chain}. Remove one of the _base_ entries.")
    return _merge_bases(_read_yaml(path), path, stack)


def _merge_bases(data: dict[str, Any], path: Path, stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``data`` merged over its ``_base_`` configs (paths relative to ``path``'s folder, or
    preset names)."""
    bases = data.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = (path.parent / base) if not os.path.isabs(base) else Path(base)
        if not base_path.is_file() and (PRESET_DIR / f"{base}.yaml").is_file():
            base_path = PRESET_DIR / f"{base}.yaml"  # a packaged preset named by bare name
        if not base_path.is_file():
            raise ConfigError(
                f"{path} names _base_ {base!r}, but neither {base_path} nor a preset of that "
                "name exists."
            )
        merged = merge_configs(merged, _load_with_bases(base_path, (*stack, path)))
    return merge_configs(merged, data)


def check_top_level_keys(keys: Iterable[Any], source: str) -> None:
    """Refuse top-level keys outside :data:`KNOWN_TOP_LEVEL_KEYS`, suggesting close ones."""
    import difflib

    for key in keys:
        if key in KNOWN_TOP_LEVEL_KEYS:
            continue
        known = sorted(k for k in KNOWN_TOP_LEVEL_KEYS if k != "_source_")
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"{source}: unknown top-level key {key!r}. {hint}Known keys: {', '.join(known)}."
        )


def _resolve(cfg: DictConfig, source: str) -> dict[str, Any]:
    """Resolve every ``${...}`` interpolation; cycles and dangling names raise ConfigError."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"{source}: an interpolation cannot be resolved ({detail}). Check the ${{...}} "
            "references: each must name an existing key, and none may refer back to itself."
        ) from exc


def parse_overrides(overrides: Iterable[str]) -> DictConfig:
    """Turn ``["a.b=1", "c=[1,2]"]`` into a config; values are parsed as YAML scalars/lists."""
    dotlist = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"Override {item!r} is not of the form key=value (e.g. pipeline.logit_scale=50)."
            )
        key, value = item.split("=", 1)
        if not key:
            raise ConfigError(f"Override {item!r} has an empty key.")
        dotlist.append(f"{key}={value}")
    try:
        return OmegaConf.from_dotlist(dotlist)
    except Exception as exc:  # omegaconf raises several grammar error types
        raise ConfigError(f"Cannot parse overrides {list(overrides)}: {exc}") from exc


def load_config(
    name_or_path: str | os.PathLike | Mapping[str, Any],
    overrides: Iterable[str] = (),
) -> DictConfig:
    """Load a preset name, YAML path or mapping, apply ``_base_`` merges and ``key=value`` overrides."""
    if isinstance(name_or_path, Mapping):
        data = OmegaConf.to_container(OmegaConf.create(dict(name_or_path)), resolve=False)
        # a mapping's _base_ entries are preset names or paths from the working directory
        data = _merge_bases(data, Path.cwd() / "<mapping>")
        source = "<mapping>"
    else:
        path = resolve_config_path(name_or_path)
        data = _load_with_bases(path)
        source = str(path)
    cfg = OmegaConf.create(data)
    check_top_level_keys(cfg.keys(), source)
    overrides = list(overrides)
    if overrides:
        parsed = parse_overrides(overrides)
        check_top_level_keys(parsed.keys(), "override")
        cfg = OmegaConf.merge(cfg, parsed)
    cfg = OmegaConf.create(_resolve(cfg, source))
    OmegaConf.set_struct(cfg, False)
    cfg["_source_"] = source
    return cfg


def to_container(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Plain resolved dict of ``cfg`` (without the bookkeeping ``_source_`` key)."""
    data = (
        OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
        if not isinstance(cfg, dict)
        else dict(cfg)
    )
    data.pop("_source_", None)
    return data


def save_resolved_config(cfg: DictConfig | Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the fully resolved config as YAML, atomically (temporary file, then rename)."""
    from ovseg.fileio import atomic_write_text  # numpy and PIL: not needed to read configs

    return atomic_write_text(path, yaml.safe_dump(to_container(cfg), sort_keys=False))
