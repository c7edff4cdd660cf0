"""Project-wide guard: no code in ovseg/ may unpickle untrusted data.

Checkpoints go through ovseg.weights, which scans pickles and passes ``weights_only=True``.
This test walks the syntax tree (not the text, so comments and docstrings do not count) of every
module under ovseg/ and fails on:

* a ``torch.load(...)`` call without the literal keyword ``weights_only=True`` on that call;
* any ``pickle.load`` / ``pickle.loads`` / ``pickle.Unpickler`` (also via ``_pickle``,
  ``cPickle``, ``dill``, ``cloudpickle``, ``joblib``), any ``torch.jit.load``;
* ``numpy.load(..., allow_pickle=True)``;
* ``from pickle import load`` style imports that would hide such calls from the check above.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ovseg"

_PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib"}
_FORBIDDEN_CALLS = {f"{m}.{f}" for m in _PICKLE_MODULES for f in ("load", "loads", "Unpickler")}
_FORBIDDEN_CALLS |= {"torch.jit.load", "jit.load", "torch.package.PackageImporter"}
_FORBIDDEN_IMPORTS = {
    **{m: {"load", "loads", "Unpickler"} for m in _PICKLE_MODULES},
    "torch": {"load"},
    "torch.jit": {"load"},
}


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """``import pickle as pkl`` -> {"pkl": "pickle"}; ``import numpy as np`` -> {"np": "numpy"}."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
    return aliases


def _canonical(name: str, aliases: dict[str, str]) -> str:
    head, _, rest = name.partition(".")
    head = aliases.get(head, head)
    return f"{head}.{rest}" if rest else head


def _has_kw_true(call: ast.Call, keyword: str) -> bool:
    return any(
        kw.arg == keyword and isinstance(kw.value, ast.Constant) and kw.value.value is True
        for kw in call.keywords
    )


def find_violations(source: str, filename: str = "<string>") -> list[str]:
    tree = ast.parse(source, filename=filename)
    aliases = _module_aliases(tree)
    problems: list[str] = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.module in _FORBIDDEN_IMPORTS:
            bad = _FORBIDDEN_IMPORTS[node.module]
            for alias in node.names:
                if alias.name in bad:
                    problems.append(f"{where}: from {node.module} import {alias.name}")
        if not isinstance(node, ast.Call):
            continue
        raw = _dotted(node.func)
        if raw is None:
            continue
        name = _canonical(raw, aliases)
        if name == "torch.load" and not _has_kw_true(node, "weights_only"):
            problems.append(f"{where}: {raw}(...) without weights_only=True")
        elif name in _FORBIDDEN_CALLS:
            problems.append(f"{where}: {raw}(...) unpickles arbitrary objects")
        elif name == "numpy.load" and _has_kw_true(node, "allow_pickle"):
            problems.append(f"{where}: {raw}(..., allow_pickle=True)")
    return problems


def test_checker_catches_unsafe_calls_and_ignores_text():
    bad = """
import pickle
import pickle as pkl
import numpy as np
import torch
from torch import load
torch.load(f)
torch.load(f, weights_only=False)
torch.load(f, **kwargs)
pickle.load(f)
pkl.loads(b)
torch.jit.load("m.pt")
np.load("a.npy", allow_pickle=True)
"""
    problems = find_violations(bad)
    assert len(problems) == 8, problems
    good = '''
"""Never call torch.load(f) or pickle.loads(b) here."""
import numpy as np
import torch
# torch.load(path) would be unsafe
x = torch.load(fh, map_location="cpu", weights_only=True)
y = np.load("a.npy")
s = "pickle.load(f)"
'''
    assert find_violations(good) == []


def test_no_unsafe_loading_in_package():
    files = sorted(PACKAGE.rglob("*.py"))
    assert files, f"no python files found under {PACKAGE}"
    problems: list[str] = []
    for path in files:
        rel = path.relative_to(PACKAGE.parent)
        problems += find_violations(path.read_text(encoding="utf-8"), str(rel))
    assert not problems, "unsafe deserialisation in ovseg/:\n" + "\n".join(problems)


def test_the_safe_loader_itself_is_checked():
    weights = (PACKAGE / "weights.py").read_text(encoding="utf-8")
    assert "torch.load(" in weights  # the scan above really looked at the one loader
    assert find_violations(weights, "ovseg/weights.py") == []
