"""No import circle anywhere in the project's code.

A circle means two modules cannot be understood, tested or changed apart (csms_stub's app,
API and server once were one through a shared ``Stub`` object). The graph is built from the
source with ``ast``, so it sees what running the code might not: imports under ``if
TYPE_CHECKING:`` count too (they are the circle, merely hidden from the interpreter), as do
imports inside functions (usually a circle broken by hand at run time).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: packages, by their folder; benchmarks/ is a folder of scripts run as ``python benchmarks/x.py``
PACKAGES = ("loadgen", "csms_stub", "tests")
SCRIPTS = "benchmarks"


def _modules() -> dict[str, Path]:
    """Every project module's dotted name (as it is imported) and file."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    for path in sorted((ROOT / SCRIPTS).rglob("*.py")):
        # benchmarks/ is first on sys.path when they run: its scripts and packages are top level
        parts = path.relative_to(ROOT / SCRIPTS).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """The dotted names an import statement asks for (``from a import b``: a.b, then a)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([base] if base else [])])
        for alias in node.names:
            yield f"{base}.{alias.name}"
        yield base


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` lands in: itself, or its longest module prefix."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


#: how a module imports another: at import time, under ``if TYPE_CHECKING:``, inside a function
RUNTIME, TYPE_CHECKING, DEFERRED = "runtime", "type_checking", "deferred"


def _import_nodes(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement of a module, with how it runs."""

    def walk(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, kind
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, DEFERRED if kind == RUNTIME else kind)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from walk(ast.Module(body=child.body, type_ignores=[]), TYPE_CHECKING)
                yield from walk(ast.Module(body=child.orelse, type_ignores=[]), kind)
            else:
                yield from walk(child, kind)

    yield from walk(tree, RUNTIME)


def import_edges() -> dict[str, dict[str, set[str]]]:
    """Each project module -> the project modules it imports -> how (see RUNTIME...)."""
    modules = _modules()
    graph: dict[str, dict[str, set[str]]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: dict[str, set[str]] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, kind in _import_nodes(tree):
            names = list(_imported(node, module, is_package))
            if isinstance(node, ast.ImportFrom):
                # ``from a import b`` imports the module a.b when there is one, else a's name b
                found = {_resolve(name, modules) for name in names[:-1]}
                base = _resolve(names[-1], modules)
                if base is not None and not any(t and t.startswith(base + ".") for t in found):
                    found.add(base)
            else:
                found = {_resolve(name, modules) for name in names}
            for target in found - {None, module}:
                assert target is not None
                edges.setdefault(target, set()).add(kind)
        graph[module] = edges
    return graph


def import_graph() -> dict[str, set[str]]:
    """Each project module -> the project modules it imports, in any way."""
    return {module: set(edges) for module, edges in import_edges().items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def tolerated(source: str, target: str, kinds: set[str]) -> bool:
    """The one kind of circle still tolerated: the modules the station delegates to (CSMS
    commands, device model, smart charging, 2.1 rules) name ``Station`` in their type hints
    only. Anything they import to run, and any other circle, fails."""
    return target == "loadgen.station" and kinds == {TYPE_CHECKING}


def test_the_graph_sees_the_imports_that_matter() -> None:
    edges = import_edges()
    assert edges["csms_stub.server"]["loadgen.ocppj"] == {RUNTIME}
    # ``from package import module`` lands on the module, not the package
    assert "csms_stub.handlers.v201" in edges["csms_stub.handlers.v16"]
    assert {"csms_stub.handlers.v16", "csms_stub.handlers.v21"} <= set(edges["csms_stub.handlers"])
    assert edges["loadgen.commands"]["loadgen.station"] == {TYPE_CHECKING}
    assert edges["faults"]["_common"] == {RUNTIME}  # benchmarks import each other by file name
    deferred = [
        (module, target)
        for module, targets in edges.items()
        for target, kinds in targets.items()
        if DEFERRED in kinds
    ]
    assert deferred, "imports inside functions are part of the graph"


def test_cycles_finds_a_circle_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    graph = {
        module: {
            target for target, kinds in targets.items() if not tolerated(module, target, kinds)
        }
        for module, targets in import_edges().items()
    }
    found = cycles(graph)
    if found:
        pytest.fail("import circles: " + "; ".join(" <-> ".join(c) for c in found))
