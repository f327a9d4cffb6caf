"""Every use of a private name of Lightning or Hydra in src/: an AST walk.

    .venv/bin/python scripts/private_names.py [src]

A private name is one with a leading underscore (not a dunder) that Lightning or Hydra define: a module of
theirs on an import path (``hydra._internal...``), a name imported from one of their modules, or an
attribute read or written on an object. An attribute counts when Lightning or Hydra define it and the project
does not define it itself: on ``self`` inside a class of the project, when that class does not define it (so
it comes from a Lightning base class); on anything else, when no class of the project defines it. Prints one
line per use (``path:line name``) and the count; exits 1 when there are more than ``--most`` (default 3).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from pathlib import Path

LIBRARIES = ("lightning", "hydra")


def _private(name: str) -> bool:
    # not dunders, nor Hydra's config keys (_target_, _convert_), which are public
    return name.startswith("_") and not name.endswith("_")


def _defined(tree: ast.AST) -> set[str]:
    """Underscore names a module defines: functions, classes, assigned names and attributes set on objects."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {name for name in names if _private(name)}


def library_names() -> set[str]:
    """Every underscore name defined anywhere in Lightning's and Hydra's installed sources."""
    names = set()
    for library in LIBRARIES:
        spec = importlib.util.find_spec(library)
        for path in Path(next(iter(spec.submodule_search_locations))).rglob("*.py"):
            try:
                names |= _defined(ast.parse(path.read_text(encoding="utf-8")))
            except SyntaxError:
                continue
    return names


def _class_names(tree: ast.AST) -> dict[ast.ClassDef, set[str]]:
    return {node: _defined(node) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def uses(root: Path) -> list[tuple[Path, int, str]]:
    """(file, line, name) of every use of a private name of Lightning or Hydra under ``root``."""
    theirs = library_names()
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(root.rglob("*.py"))}
    ours = set()  # underscore attributes some class of the project defines
    for tree in trees.values():
        for names in _class_names(tree).values():
            ours |= names
    found = []
    for path, tree in trees.items():
        classes = _class_names(tree)
        owner = {}  # node -> the project's class it sits in
        for cls in classes:
            for node in ast.walk(cls):
                owner.setdefault(node, cls)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
                if any(_private(p) for p in node.module.split(".")):
                    found.append((path, node.lineno, node.module))
                found += [(path, node.lineno, f"{node.module}.{a.name}") for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")
                    if top[0] in LIBRARIES and any(_private(p) for p in top):
                        found.append((path, node.lineno, alias.name))
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr in theirs:
                on_self = isinstance(node.value, ast.Name) and node.value.id == "self"
                cls = owner.get(node)
                mine = (node.attr in classes[cls]) if on_self and cls is not None else node.attr in ours
                if not mine:
                    found.append((path, node.lineno, node.attr))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1] / "src"))
    parser.add_argument("--most", type=int, default=3)
    args = parser.parse_args()
    root = Path(args.root)
    found = uses(root)
    for path, line, name in found:
        print(f"{path.relative_to(root)}:{line} {name}")
    print(f"{len(found)} uses of private names of Lightning or Hydra")
    sys.exit(1 if len(found) > args.most else 0)


if __name__ == "__main__":
    main()
