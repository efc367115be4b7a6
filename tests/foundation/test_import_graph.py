"""The package's import graph: no cycles, and the library never imports the bench layer or the CLI.

Every ``import``/``from … import`` statement under ``src/unlearnkit`` counts, at module level and inside
functions alike (a function-level import hides a cycle from Python, not from a reader), except those under
``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "unlearnkit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The unlearnkit modules ``path`` imports (a name imported from a package counts as its submodule)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("unlearnkit"):
                        out.add(resolve(alias.name) or alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                if mod.startswith("unlearnkit"):
                    for alias in child.names:
                        sub = f"{mod}.{alias.name}"
                        out.add(sub if sub in modules else (resolve(mod) or mod))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    files = sorted(SRC.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, modules) for f in files}


def _parents(module: str) -> set[str]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a.b/__init__`` first; those edges are implied, not cycles."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    edges = {m: {t for t in deps if t not in _parents(m)} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t) :], t])
            elif t in edges and state.get(t) is None:
                dfs(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if state.get(m) is None:
            dfs(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("layer", ["unlearnkit.bench", "unlearnkit.cli"])
def test_the_library_never_imports_the_bench_layer_or_the_cli(layer: str) -> None:
    graph = _graph()
    library = [m for m in graph if not (m.startswith(("unlearnkit.bench", "unlearnkit.cli")))]
    offenders = {m: sorted(t for t in graph[m] if t == layer or t.startswith(layer + ".")) for m in library}
    offenders = {m: t for m, t in offenders.items() if t}
    assert not offenders, f"library modules importing {layer}: {offenders}"


def test_the_graph_sees_real_edges() -> None:
    """Guard against a parser that finds nothing: known edges must be there."""
    graph = _graph()
    assert "unlearnkit.methods.base" in graph["unlearnkit.runner"]
    assert "unlearnkit.runner" in graph["unlearnkit.jobs.run"]
    assert "unlearnkit.jobs.run" in graph["unlearnkit.pipeline"]
    assert any(t.startswith("unlearnkit.bench") for t in graph["unlearnkit.cli.bench"])
