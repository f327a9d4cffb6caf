"""The package layout is the architecture: imports point one way (cli -> run -> models, data, reports ->
config -> errors, files), so no module reaches up into the layer that uses it and there are no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "deepbasics"
# Each room and the rooms it may import. models, data and reports sit side by side and stay apart.
ALLOWED = {
    "errors": set(),
    "compat": set(),  # what Lightning and Hydra offer only privately, in one place
    "files": {"errors"},
    "config": {"errors", "files"},
    "models": {"config", "errors", "files"},
    "data": {"config", "errors", "files"},
    "reports": {"config", "errors", "files"},
    "run": {"models", "data", "reports", "config", "errors", "files", "compat"},
    "cli": {"run", "config", "errors"},
    "train": {"cli"},  # the module forms of the console scripts (python -m deepbasics.train)
    "evaluate": {"cli"},
    "predict": {"cli"},
    "api": {"run", "models", "data", "reports", "config", "errors", "files"},
    "__init__": {"api"},  # the package re-exports the Python API
}


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def _imports() -> dict[str, set[str]]:
    """module name -> the deepbasics modules it imports (at the top or inside functions)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deepbasics"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("deepbasics"))
        graph[name] = found
    return graph


GRAPH = _imports()


def test_every_module_lives_in_a_known_room():
    assert {_room(m) for m in GRAPH} <= set(ALLOWED)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_one_way(module):
    room = _room(module)
    wrong = {i for i in GRAPH[module] if _room(i) != room and _room(i) not in ALLOWED[room]}
    assert not wrong, f"{module} ({room}) imports {sorted(wrong)}; {room} may import {sorted(ALLOWED[room])}"


def test_no_import_cycles():
    seen, done = [], set()

    def visit(module):
        if module in done:
            return
        assert module not in seen, f"import cycle: {' -> '.join([*seen[seen.index(module) :], module])}"
        seen.append(module)
        for target in GRAPH.get(module, ()):
            if target in GRAPH:
                visit(target)
        seen.pop()
        done.add(module)

    for module in GRAPH:
        visit(module)


def _twins(stems) -> list[list[str]]:
    """Groups of names that differ only by an ending (evaluate / evaluation, checkpoints / checkpoint_io)."""
    groups: dict[str, list[str]] = {}
    for stem in sorted(set(stems)):
        root = stem.removesuffix("_io")
        for ending in ("ion", "s", "e"):
            root = root.removesuffix(ending)
        groups.setdefault(root, []).append(stem)
    return [names for names in groups.values() if len(names) > 1]


def test_no_twin_module_names():
    # the names the flat layout had are caught ...
    old = ["evaluate", "evaluation", "predict", "prediction", "checkpoints", "checkpoint_io"]
    assert _twins(old) == [["checkpoint_io", "checkpoints"], ["evaluate", "evaluation"], ["predict", "prediction"]]
    # ... and the package has none
    assert _twins(m.rsplit(".", 1)[-1] for m in GRAPH if "." in m) == []
