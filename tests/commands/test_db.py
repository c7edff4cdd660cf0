"""The `ovseg db build | merge | info | search` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from ovseg.cased.build import build_database
from ovseg.cased.database import MANIFEST_NAME, load_database
from ovseg.cased.pos_lexicon import wordnet_tag
from ovseg.commands.db import build_parser, info_parser, merge_parser, search_parser
from ovseg.errors import ConfigError, DatabaseError
from tests.cased.corpus import CORPUS, backbone, corpus  # noqa: F401  (fixtures)


@pytest.fixture
def tiny_preset(tmp_path, tiny_model_names):
    path = tmp_path / "tiny.yaml"
    cfg = {
        "pipeline": {
            "type": "SemanticSegmenter",
            "backbone": {
                "type": "ClipBackbone",
                "model_name": tiny_model_names["vit"],
                "templates": "photo",
            },  # fmt: skip
            "inference": {"mode": "whole"},
        }
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_db_commands(tmp_path, corpus, tiny_preset, capsys, one_torch_thread):
    import torch

    out = tmp_path / "db"
    torch.manual_seed(0)  # every command builds the random-init model anew: the same one
    args = build_parser().parse_intermixed_args(
        [
            "--texts",
            str(corpus),
            "--preset",
            str(tiny_preset),
            "--out",
            str(out),
            "--batch-size",
            "16",
            "--kind",
            "concepts",
            "--quiet",
        ]  # fmt: skip
    )
    assert args.func(args) == 0
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["kind"] == "concepts" and "--preset" in manifest["build_command"]
    args = info_parser().parse_intermixed_args([str(out), "--json"])
    assert args.func(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == len(CORPUS) and info["index"]["type"] == "flat"
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)).save(image)
    args = search_parser().parse_intermixed_args(
        [
            str(image),
            "--db",
            str(out),
            "--preset",
            str(tiny_preset),
            "--box",
            "0,0,20,20",
            "--json",
            "--top",
            "2",
        ]  # fmt: skip
    )
    torch.manual_seed(1)
    with pytest.raises(DatabaseError, match="other ovseg-test-vit weights"):
        args.func(args)
    torch.manual_seed(0)
    assert args.func(args) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["pos_filter"] == "concepts"  # a concept database's entries are the names
    assert 1 <= len(found["names"]) <= 2
    assert all(entry["name"] in CORPUS for entry in found["names"])
    with pytest.raises(ConfigError, match="x1,y1,x2,y2"):
        args = search_parser().parse_intermixed_args(
            [str(image), "--db", str(out), "--preset", str(tiny_preset), "--box", "1,2"]
        )
        args.func(args)
    sharded = tmp_path / "sharded"
    for rank in (0, 1):
        args = build_parser().parse_intermixed_args(
            [
                "--texts",
                str(corpus),
                "--preset",
                str(tiny_preset),
                "--out",
                str(sharded),
                "--rank",
                str(rank),
                "--world-size",
                "2",
                "--no-merge",
                "--quiet",
            ]  # fmt: skip
        )
        torch.manual_seed(0)
        assert args.func(args) == 0
    args = merge_parser().parse_intermixed_args(["--out", str(sharded), "--quiet"])
    assert args.func(args) == 0
    assert len(load_database(sharded)) == len(CORPUS)


def test_build_from_jsonl_with_a_field_then_search_captions(
    tmp_path, tiny_preset, capsys, one_torch_thread
):
    import torch

    source = tmp_path / "captions.jsonl"
    source.write_text("".join(json.dumps({"id": i, "meta": {"cap": c}}) + "\n"
                              for i, c in enumerate(CORPUS + CORPUS[:5])))  # fmt: skip
    out = tmp_path / "db"
    argv = ["--texts", str(source), "--preset", str(tiny_preset), "--out", str(out),
            "--field", "meta.cap", "--batch-size", "32", "--quiet"]  # fmt: skip
    torch.manual_seed(0)
    args = build_parser().parse_intermixed_args(argv)
    assert args.func(args) == 0
    db = load_database(out)
    assert db.texts.all() == CORPUS  # duplicates dropped, corpus order kept
    assert "--field meta.cap" in json.loads((out / MANIFEST_NAME).read_text())["build_command"]
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(image)
    for pos_filter in ("none", "wordnet"):
        args = search_parser().parse_intermixed_args(
            [
                str(image),
                "--db",
                str(out),
                "--preset",
                str(tiny_preset),
                "--json",
                "--pos-filter",
                pos_filter,
            ]  # fmt: skip
        )
        torch.manual_seed(0)
        assert args.func(args) == 0
        found = json.loads(capsys.readouterr().out)
        assert found["pos_filter"] == pos_filter
        names = {entry["name"] for entry in found["names"]}
        if pos_filter == "wordnet":  # every name is a WordNet noun or adjective
            assert names and all(wordnet_tag(name) in {"NN", "JJ"} for name in names)


def test_db_commands_through_the_ovseg_command(tmp_path, corpus, tiny_preset, monkeypatch,
                                               capsys, one_torch_thread):  # fmt: skip
    """The entries ovseg.cli's COMMANDS takes for the `db` group (lazily imported factories)."""
    import torch

    from ovseg import cli

    for name in ("build", "merge", "info", "search"):
        monkeypatch.setitem(cli.COMMANDS, f"db {name}",
                            (f"ovseg.commands.db:{name}_parser", f"{name} a text database"))  # fmt: skip
    out = tmp_path / "db"
    torch.manual_seed(0)
    assert cli.main(["db", "build", "--texts", str(corpus), "--preset", str(tiny_preset),
                     "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert cli.main(["db", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == len(CORPUS)
    assert cli.main(["db", "merge", "--out", str(out)]) == 2  # nothing to merge: a clean error
    assert "no unfinished build" in capsys.readouterr().err


def test_info_reports_an_unfinished_build(tmp_path, corpus, backbone, capsys):
    out = tmp_path / "db"
    build_database(corpus, backbone, out, batch_size=8, chunk_batches=1, rank=1, world_size=2,
                   merge=False, progress=False)  # fmt: skip
    args = info_parser().parse_intermixed_args([str(out), "--json"])
    assert args.func(args) == 0
    pending = json.loads(capsys.readouterr().out)["unfinished_build"]
    assert pending == {"chunks": 13, "present": 6, "count": len(CORPUS)}
    args = info_parser().parse_intermixed_args([str(tmp_path / "nothing")])
    with pytest.raises(DatabaseError, match="not an ovseg text database"):
        args.func(args)
