"""The package's layout keeps the promises of the README's Design section: the imports between
streamgd's modules form no cycle (imports inside functions included: a function-level import
is a cycle put off, not removed), no module takes another module's private names, and no
module grows past the size at which it stops doing one job.

The import graph is read from the source with ``ast`` (nothing is imported). Importing
``streamgd.a.b`` runs ``streamgd/a/__init__.py`` first, so it counts as an import of the
package ``streamgd.a`` too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "streamgd"
MAX_LINES = 550  # "~500 lines": a module past this has grown a second job


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _package(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _absolute(name: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package(name).split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _imports(name: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import in module ``name``."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(name, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # "from . import x" imports the module x when there is one
                found.append(
                    (sub, "", node.lineno) if sub in MODULES else (target, alias.name, node.lineno)
                )
    return [f for f in found if f[0].split(".")[0] == "streamgd"]


def _with_packages(module: str) -> list[str]:
    """``streamgd.a.b`` -> [``streamgd.a.b``, ``streamgd.a``]: importing a module runs the
    ``__init__`` of every package above it (the top package's own is left out: every module
    is inside it)."""
    parts = module.split(".")
    names = [".".join(parts[:i]) for i in range(len(parts), 1, -1)]
    return [n for n in names if n in MODULES]


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name in MODULES:
        edges = set()
        for module, _, _ in _imports(name):
            # the packages above ``name`` are already being imported when ``name`` runs
            edges.update(m for m in _with_packages(module) if not _contains(m, name))
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _contains(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_no_module_uses_another_modules_private_names():
    offenders = []
    for name in MODULES:
        for module, imported, line in _imports(name):
            if imported.startswith("_") and not imported.startswith("__") and module != name:
                offenders.append(
                    f"{MODULES[name].relative_to(ROOT.parent)}:{line} {module}.{imported}"
                )
    assert offenders == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by job"


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
