"""The house as the folder names say: no import circle between the package's modules (type-
only imports included), and the lower layers never reach up (model/ and engine/ know nothing
of the daemon or of evaluation; evaluation, above the engine, nothing of the daemon; the daemon
nothing of the panel)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ostinato"


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("ostinato"):
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("ostinato"))
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle() -> None:
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package
    assert cycles(graph) == []


def test_lower_layers_never_reach_up() -> None:
    rules = {
        "ostinato.model": ("ostinato.daemon", "ostinato.engine", "ostinato.evaluate",
                           "ostinato.gui", "ostinato.cli"),
        "ostinato.engine": ("ostinato.daemon", "ostinato.evaluate", "ostinato.gui",
                            "ostinato.cli"),
        "ostinato.evaluate": ("ostinato.daemon", "ostinato.gui", "ostinato.cli"),
        "ostinato.daemon": ("ostinato.evaluate", "ostinato.gui", "ostinato.cli"),
        "ostinato.loops": ("ostinato.daemon", "ostinato.engine", "ostinato.evaluate",
                           "ostinato.gui", "ostinato.cli"),
    }  # fmt: skip
    wrong = [
        f"{module} imports {dep}"
        for module, deps in import_graph().items()
        for layer, above in rules.items()
        if module.startswith(layer + ".") or module == layer
        for dep in deps
        if dep.startswith(above)
    ]
    assert wrong == []


def test_the_circle_finder_finds_circles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
