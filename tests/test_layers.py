"""Layers import only downward (docs/architecture.md): each rule lists what a layer must not import.

Imports anywhere in a module count, inside functions too (a lazy import is still a dependency).
Registries name their built-in modules as strings (ovseg.registry), which is not an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ovseg"
BASE = ("ovseg.errors", "ovseg.fileio", "ovseg.structures", "ovseg.settings")
CORE = (
    "ovseg.registry",
    "ovseg.config",
    "ovseg.io",
    "ovseg.io_video",
    "ovseg.tracks",
    "ovseg.weights",
    "ovseg.plugins",
)
ABOVE_MODELS = (
    "ovseg.engine",
    "ovseg.evaluation",
    "ovseg.data",
    "ovseg.pipelines",
    "ovseg.tasks",
    "ovseg.demo",
    "ovseg.cli",
    "ovseg.commands",
    "ovseg.benchmarks",
    "ovseg.api",
    "ovseg.components",
    "ovseg.interop",
)

# (modules the rule applies to, prefixes they must not import, or None: only BASE / CORE)
RULES = [
    (("ovseg/fileio.py", "ovseg/errors.py", "ovseg/structures.py", "ovseg/settings.py"), None),
    (
        ("ovseg/registry.py", "ovseg/config.py", "ovseg/io.py", "ovseg/io_video.py"),
        None,
    ),
    (("ovseg/weights.py", "ovseg/tracks.py"), None),
    (("ovseg/vocab",), ("ovseg.models", "ovseg.inference", "ovseg.cased", *ABOVE_MODELS)),
    (("ovseg/cased",), ("ovseg.models", "ovseg.inference", *ABOVE_MODELS)),
    (("ovseg/models",), (*ABOVE_MODELS, "ovseg.cased")),
    (("ovseg/inference",), tuple(p for p in ABOVE_MODELS if p != "ovseg.data")),
    (
        ("ovseg/data/ade20k.py",),
        ("ovseg.data.ade_writer", "ovseg.data.writers", "ovseg.data.synthetic"),
    ),  # fmt: skip
]


def _files(paths: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        target = ROOT / path
        out += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return out


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n == "ovseg" or n.startswith("ovseg.")}


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("paths, forbidden", RULES, ids=lambda v: str(v[0]) if v else "-")
def test_layer_imports_only_downward(paths, forbidden):
    bad = []
    for path in _files(paths):
        own = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in sorted(_imports(path)):
            if forbidden is None:
                allowed = (*BASE, *CORE)
                # "from ovseg import errors" names the package itself; its members must be allowed
                ok = name == "ovseg" or any(_matches(name, p) for p in allowed)
            else:
                ok = not any(_matches(name, p) for p in forbidden)
            if not ok and not _matches(name, own):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_rules_cover_existing_files():
    for paths, _ in RULES:
        for path in paths:
            assert (ROOT / path).exists(), path


def test_models_do_not_import_the_inference_layer():
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _files(("ovseg/models",))
        for name in sorted(_imports(path))
        if _matches(name, "ovseg.inference")
    ]
    assert not bad, bad


def test_no_task_pipeline_imports_another():
    """Task pipelines share only through lower layers and the shared ``pipelines.base``."""
    folder = PACKAGE / "pipelines"
    tasks = {p.stem for p in folder.glob("*.py")} - {"__init__", "base"}
    bad = []
    for path in sorted(folder.glob("*.py")):
        for name in sorted(_imports(path)):
            other = name.split(".")[2] if name.startswith("ovseg.pipelines.") else None
            if other in tasks and other != path.stem:
                bad.append(f"{path.name} imports {name}")
    assert not bad, bad


def test_the_import_map_has_no_cycle():
    """Module-level imports between ovseg modules form no cycle."""
    graph: dict[str, set[str]] = {}
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets: set[str] = set()
        for node in tree.body:  # module level only: lazy imports inside functions break cycles
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            for candidate in candidates:
                if candidate in modules and candidate != name:
                    targets.add(candidate)
                    break
        graph[name] = targets
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                raise AssertionError(
                    "import cycle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt])
                )
            if nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module)
