"""Every use of a private name of Lightning or Hydra in src/: an AST walk.

    .venv/bin/python scripts/private_names.py [src]

A private name is one with a leading underscore (not a dunder, nor Hydra's ``_target_``-style config keys)
that Lightning or Hydra define: a module of theirs on an import path (``hydra._internal...``), a name
imported from one of their modules, or an attribute that they define. An attribute counts inside a class of
the project that derives from one of theirs (a base imported from Lightning or Hydra: overriding or setting
their private attributes is using them), on ``self`` of another class when that class does not define it,
and on any other object when no class of the project defines it. Prints one line per use
(``path:line name``) and the count; exits 1 when there are more than ``--most`` (default 3).
"""

from __future__ import annotations

import argparse
import ast
import functools
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


@functools.cache
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


def _bindings(tree: ast.AST) -> dict[str, str]:
    """Names a module binds by importing from Lightning or Hydra -> what they are (a dotted path)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            names.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in LIBRARIES:  # import a.b binds a; import a.b as c binds c to a.b
                    names[alias.asname or top] = alias.name if alias.asname else top
    return names


def _their_base_names(cls: ast.ClassDef, bindings: dict[str, str]) -> set[str]:
    """The underscore names Lightning's or Hydra's classes among ``cls``'s bases (and theirs) define."""
    import importlib
    import inspect

    names = set()
    for base in cls.bases:
        parts = []
        while isinstance(base, ast.Attribute):
            parts.insert(0, base.attr)
            base = base.value
        if not isinstance(base, ast.Name) or base.id not in bindings:
            continue
        path = [*bindings[base.id].split("."), *parts]
        obj = None
        for cut in range(len(path), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(path[:cut]))
            except ImportError:
                continue
            for attr in path[cut:]:
                obj = getattr(obj, attr)
            break
        for klass in getattr(obj, "__mro__", ()):
            if klass.__module__.split(".")[0] in LIBRARIES:
                try:
                    names |= _defined(ast.parse(inspect.getsource(klass).lstrip()))
                except (OSError, TypeError, SyntaxError):
                    continue
    return names


def uses(root: Path) -> list[tuple[Path, int, str]]:
    """(file, line, name) of every use of a private name of Lightning or Hydra under ``root``."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(root.rglob("*.py"))}
    ours = set()  # underscore attributes some class of the project defines
    for tree in trees.values():
        for names in _class_names(tree).values():
            ours |= names
    return [use for path, tree in trees.items() for use in found_in(tree, path, ours)]


def found_in(tree: ast.AST, path: Path, ours: set[str] | None = None) -> list[tuple[Path, int, str]]:
    """The uses in one module; ``ours``: the underscore attributes the project's classes define (by
    default, this module's)."""
    theirs = library_names()
    classes = _class_names(tree)
    ours = ours if ours is not None else set().union(*classes.values())
    bindings = _bindings(tree)
    inherited = {cls: _their_base_names(cls, bindings) for cls in classes}
    owner = {}  # node -> the project's (innermost) class it sits in
    for cls in classes:
        for node in ast.walk(cls):
            owner[node] = cls
    found = []
    for cls in classes:  # private methods of a Lightning or Hydra base class, overridden
        for node in cls.body:
            if isinstance(node, ast.FunctionDef) and node.name in inherited[cls] and _private(node.name):
                found.append((path, node.lineno, node.name))
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
            if on_self and cls is not None:  # a private attribute of a base class of theirs, or its own
                mine = node.attr not in inherited[cls] and node.attr in classes[cls]
            else:
                mine = node.attr in ours
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
