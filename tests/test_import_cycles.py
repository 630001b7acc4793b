"""No two inspectd modules import each other, directly or around a loop (function-local imports count too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "inspectd"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in modules}
    return found


def test_the_module_import_graph_has_no_cycle():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
    modules = set(paths)
    graph = {name: _imports(path, modules) - {name} for name, path in paths.items()}
    # Importing a package runs its __init__; an edge to a package stands for that file only.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_package_import_graph_has_no_cycle():
    """One level up: no package (daemon, store, cli, inspection, the settings module, ...) imports one that
    imports it back, so each has a place in one order from the shared definitions (verdict, errors, logs) up to
    the entry points."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
    modules = set(paths)

    def package(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    arrows: dict[tuple[str, str], str] = {}
    for name, path in paths.items():
        for target in _imports(path, modules) - {name}:
            if package(name) != package(target) and package(target) != "inspectd":
                arrows.setdefault((package(name), package(target)), f"{name} -> {target}")
    above: dict[str, set[str]] = {}
    for source, target in arrows:
        above.setdefault(source, set()).add(target)
    reach: dict[str, set[str]] = {}

    def reachable(package_name: str, seen: frozenset = frozenset()) -> set[str]:
        if package_name not in reach:
            found = set()
            for target in above.get(package_name, ()):
                if target not in seen:
                    found |= {target} | reachable(target, seen | {package_name})
            reach[package_name] = found
        return reach[package_name]

    back = [f"{arrows[(a, b)]} (and {b} reaches {a})" for (a, b) in arrows if a in reachable(b)]
    assert not back, "package cycles:\n" + "\n".join(sorted(back))
