"""No import cycles inside ds: every `import` / `from ... import` of every module, at module level
and inside functions, relative ones resolved, makes an edge; the graph must have no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

DS_DIR = Path(__file__).resolve().parent.parent / "ds"


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its __init__.py)."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package] + parts)] = path
    return names


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name a relative import of `importer` means (level 1 = its own package)."""
    parts = importer.split(".")
    if not is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[:len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports anywhere in its source."""
    modules = module_names(package_dir, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module) if node.level else node.module
                # `from pkg import sub` imports the submodule pkg.sub; `from mod import name` imports mod
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                # `import ds.a.b` names ds.a.b; an attribute path resolves to its longest known module
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, first repeated at the end) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:   # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(graph, set(component), component[0]) for component in components]


def _cycle_through(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside one component (breadth first)."""
    previous = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                path = [node]   # walk back to start, then read forwards
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return path[::-1] + [start]
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is in a component without a cycle")  # cannot happen


def test_ds_has_no_import_cycles():
    cycles = find_cycles(import_graph(DS_DIR, "ds"))
    assert not cycles, "import cycles in ds:\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


# ---------------------------------------------------------------- the checker itself

def _package(root: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root / "pkg"


def test_checker_finds_a_cycle_through_a_function_level_relative_import(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import helper\n",
        "b.py": "def helper():\n    from . import c\n    return c\n",
        "sub/__init__.py": "",
        "sub/c.py": "",
        "c.py": "def late():\n    from .a import thing\n",
        "d.py": "import pkg.a\n",
    })
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"} and graph["pkg.d"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_checker_resolves_parent_relative_imports_and_passes_a_clean_package(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "from .core import run\n",
        "core.py": "import os\nfrom .util import tool\n",
        "util.py": "",
        "sub/__init__.py": "from ..core import run\nfrom . import leaf\n",
        "sub/leaf.py": "from ..util import tool\nfrom pkg.core import run\n",
    })
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.sub"] == {"pkg.core", "pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.util", "pkg.core"}
    assert find_cycles(graph) == []


@pytest.mark.parametrize("edges,expected", [
    ({"x": {"y"}, "y": {"x"}}, [["x", "y", "x"]]),
    ({"x": {"y"}, "y": {"z"}, "z": {"y"}}, [["y", "z", "y"]]),
    ({"x": {"y"}, "y": set()}, []),
])
def test_cycle_finder(edges, expected):
    assert find_cycles(edges) == expected
