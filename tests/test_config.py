"""Config loading: _base_ merges, type replacement, overrides, presets, resolved dumps."""

from __future__ import annotations

import pytest
import yaml

from ovseg.config import list_presets, load_config, save_resolved_config
from ovseg.errors import ConfigError


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_base_merge_type_replacement_and_overrides(tmp_path):
    _write(tmp_path / "base.yaml", {"model": {"type": "A", "depth": 2, "width": 8}, "lr": 0.1})
    (tmp_path / "sub").mkdir()
    child = _write(
        tmp_path / "sub" / "child.yaml",
        {"_base_": ["../base.yaml"], "model": {"width": 16}, "extra": [1, 2]},
    )
    cfg = load_config(child, ["lr=0.5", "model.depth=4", "new.key=[1,2]"])
    assert cfg.model == {"type": "A", "depth": 4, "width": 16}
    assert cfg.lr == 0.5 and list(cfg.new.key) == [1, 2] and list(cfg.extra) == [1, 2]

    swap = _write(tmp_path / "swap.yaml", {"_base_": "base.yaml", "model": {"type": "B", "k": 1}})
    assert load_config(swap).model == {"type": "B", "k": 1}  # no depth/width inherited


def test_errors_are_typed(tmp_path):
    with pytest.raises(ConfigError, match="No preset or config"):
        load_config("definitely-not-a-preset")
    loop_a = _write(tmp_path / "a.yaml", {"_base_": "b.yaml"})
    _write(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="loops"):
        load_config(loop_a)
    missing = _write(tmp_path / "m.yaml", {"_base_": "nope.yaml"})
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing)
    ok = _write(tmp_path / "ok.yaml", {"a": 1})
    with pytest.raises(ConfigError, match="key=value"):
        load_config(ok, ["no-equals-sign"])
    (tmp_path / "bad.yaml").write_text("a: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_presets_resolve_and_preset_as_base(tmp_path):
    assert "sclip-vitb16-voc21" in list_presets()
    cfg = load_config("sclip-vitb16-voc21")
    assert cfg.pipeline.backbone.dense_mode == "sclip"
    assert cfg.pipeline.logit_scale == 65.0
    child = _write(
        tmp_path / "c.yaml", {"_base_": "sclip-vitb16-voc21", "pipeline": {"logit_scale": 1.0}}
    )
    assert load_config(child).pipeline.logit_scale == 1.0


def test_resolved_config_is_written_atomically(tmp_path):
    cfg = load_config({"a": {"b": 1}, "c": "${a.b}"})
    out = save_resolved_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(out.read_text()) == {"a": {"b": 1}, "c": 1}
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]
