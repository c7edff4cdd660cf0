"""tools/benchmark_reasoning.py: times the embedded READ model and refuses bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "benchmark_reasoning.py"


def _tool():
    spec = importlib.util.spec_from_file_location("benchmark_reasoning", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_input_exits_2_with_what_to_do(tmp_path, capsys):
    tool = _tool()
    assert tool.main(["--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
    assert tool.main(["--image", str(tmp_path / "none.jpg")]) == 2
    assert "--image" in capsys.readouterr().err


def test_times_a_question_on_the_embedded_model(capsys):
    assert _tool().main(["--repeats", "1", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["answer"] == "Sure, it is [SEG]." and report["threads"] == 1
    assert 0 < report["query_encoded_image_s"] and 0 < report["query_s"] < 60
