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
    _write(tmp_path / "base.yaml", {"model": {"type": "A", "depth": 2, "width": 8}, "seed": 1})
    (tmp_path / "sub").mkdir()
    child = _write(
        tmp_path / "sub" / "child.yaml",
        {"_base_": ["../base.yaml"], "model": {"width": 16}, "train": [1, 2]},
    )
    cfg = load_config(child, ["seed=5", "model.depth=4", "data.key=[1,2]"])
    assert cfg.model == {"type": "A", "depth": 4, "width": 16}
    assert cfg.seed == 5 and list(cfg.data.key) == [1, 2] and list(cfg.train) == [1, 2]

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
    ok = _write(tmp_path / "ok.yaml", {"seed": 1})
    with pytest.raises(ConfigError, match="key=value"):
        load_config(ok, ["no-equals-sign"])
    (tmp_path / "bad.yaml").write_text("seed: [1, 2")
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
    cfg = load_config({"data": {"b": 1}, "seed": "${data.b}"})
    out = save_resolved_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(out.read_text()) == {"data": {"b": 1}, "seed": 1}
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]


def test_interpolation_cycle_is_a_config_error(tmp_path):
    cyclic = _write(tmp_path / "cycle.yaml", {"data": "${seed}", "seed": "${data}"})
    with pytest.raises(ConfigError, match="interpolation cannot be resolved"):
        load_config(cyclic)
    with pytest.raises(ConfigError, match="interpolation"):
        load_config({"data": {"a": "${data.b}", "b": "${data.a}"}})
    with pytest.raises(ConfigError, match="existing key"):
        load_config({"seed": "${nowhere}"})


def test_unknown_top_level_keys_are_refused_with_a_suggestion(tmp_path):
    typo = _write(tmp_path / "typo.yaml", {"pipline": {"type": "X"}})
    with pytest.raises(
        ConfigError, match="unknown top-level key 'pipline'. Did you mean 'pipeline'"
    ):
        load_config(typo)
    with pytest.raises(ConfigError, match="unknown top-level key 'foo'"):
        load_config("shapes-tiny", ["foo.bar=1"])
    with pytest.raises(ConfigError, match="Did you mean 'vocabulary'"):
        load_config("shapes-tiny", ["vocabulary_=[a]"])
    assert load_config("shapes-tiny", ["seed=3"]).seed == 3


def test_every_shipped_config_uses_known_top_level_keys():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [
        *(root / "configs").rglob("*.yaml"),
        *(root / "ovseg" / "model_zoo" / "presets").glob("*.yaml"),
    ]
    assert len(files) > 20
    for path in files:
        load_config(path)  # raises ConfigError on an unknown key
