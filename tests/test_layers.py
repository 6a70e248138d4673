"""The architecture, checked from the source: no import cycle, imports only down the layers.

pyproject.toml's import-linter contracts (``lint-imports``, run by ``make lint``/``make test``) are
the written-down layers. This test reads the same contracts and checks them with its own walk of
every import statement in src/telecorder (module level, inside functions, under TYPE_CHECKING), so
that the rule holds even where import-linter is not installed, and adds what a layers contract
does not say: no cycle between any two modules, nor between any two sibling packages, and no
module over 800 lines.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_LINES = 800


def modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module and package under ``src/package``."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports, wherever the import statement sits."""
    mods = modules(src, package)
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # `from pkg import sub` imports the submodule; `from mod import name`, the module
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            for target in targets:
                while target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = set(graph) | {t for ts in graph.values() for t in ts}
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def sibling_graphs(graph: dict[str, set[str]]) -> dict[str, dict[str, set[str]]]:
    """For each package, the imports between its direct children (each child standing for all
    the modules under it): a cycle there is a cycle between packages or modules of one folder."""
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for source, targets in graph.items():
        for target in targets:
            a, b = source.split("."), target.split(".")
            common = 0
            while common < min(len(a), len(b)) and a[common] == b[common]:
                common += 1
            if common == len(a) or common == len(b):
                continue  # a module and a package above it
            parent = ".".join(a[:common])
            out[parent][a[common]].add(b[common])
    return out


def layer_violations(graph: dict[str, set[str]], container: str, layers: list[str]) -> list[str]:
    """Imports between the layers' modules that run up, or across siblings of one layer."""
    rank: dict[str, tuple[int, str]] = {}
    for level, layer in enumerate(layers):
        for item in layer.split("|"):
            item = item.strip().strip("()")  # "(name)": a layer some containers do not have
            rank[f"{container}.{item}"] = (level, item)

    def place(module: str) -> tuple[int, str] | None:
        for name, where in rank.items():
            if module == name or module.startswith(name + "."):
                return where
        return None

    bad = []
    for source, targets in sorted(graph.items()):
        here = place(source)
        if here is None:
            continue
        for target in sorted(targets):
            there = place(target)
            if there is None or there[1] == here[1]:
                continue
            if there[0] < here[0]:
                bad.append(f"{source} -> {target} runs up ({here[1]} is below {there[1]})")
            elif there[0] == here[0]:
                bad.append(f"{source} -> {target} runs across the siblings {here[1]} | {there[1]}")
    return bad


def contracts() -> list[dict]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["importlinter"]["contracts"]


# -- the project -------------------------------------------------------------------------------

GRAPH = import_graph(SRC, "telecorder")


def test_no_module_imports_another_that_imports_it_back():
    assert cycles(GRAPH) == []


def test_no_two_sibling_packages_or_modules_import_each_other():
    found = {parent: c for parent, g in sibling_graphs(GRAPH).items() if (c := cycles(g))}
    assert found == {}


@pytest.mark.parametrize("contract", contracts(), ids=lambda c: c["id"])
def test_imports_run_down_the_layers_of_the_contract(contract):
    assert contract["type"] == "layers"
    problems = [p for container in contract["containers"]
                for p in layer_violations(GRAPH, container, contract["layers"])]
    assert problems == []


def test_every_top_level_part_has_a_layer():
    top = {name.split(".")[1] for name in modules(SRC, "telecorder") if name.count(".") >= 1}
    layered = {item.strip().strip("()") for c in contracts() if c["containers"] == ["telecorder"]
               for layer in c["layers"] for item in layer.split("|")}
    assert top - layered == set()


def test_no_module_over_800_lines():
    long = {str(p.relative_to(ROOT)): n for p in (SRC / "telecorder").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


# -- the checker itself, on a made-up package (so that the checks above can fail) ------------------

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_checker_finds_a_lazy_cycle_an_upward_import_and_a_cycle_between_folders(tmp_path):
    src = _package(tmp_path, {
        "__init__.py": "",
        "low.py": "def f():\n    from .high import g\n",  # a lazy import running up
        "high.py": "from .low import f\n",
        "a/__init__.py": "",
        "a/one.py": "from ..b.two import x\n",
        "b/__init__.py": "",
        "b/two.py": "x = 1\n",
        "b/three.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import one\n",
    })
    graph = import_graph(src, "pkg")
    assert cycles(graph) == [["pkg.high", "pkg.low"]]
    assert cycles(sibling_graphs(graph)["pkg"]) == [["a", "b"], ["high", "low"]]
    assert layer_violations(graph, "pkg", ["high", "low"]) == [
        "pkg.low -> pkg.high runs up (low is below high)"]
    assert layer_violations(graph, "pkg", ["a | b"]) == [
        "pkg.a.one -> pkg.b.two runs across the siblings a | b",
        "pkg.b.three -> pkg.a.one runs across the siblings b | a"]


def test_the_checker_passes_a_package_that_only_imports_down(tmp_path):
    src = _package(tmp_path, {"__init__.py": "from .top import run\n", "top.py": "from .base import x\n",
                              "base.py": "import os\nx = os.sep\n"})
    graph = import_graph(src, "pkg")
    assert cycles(graph) == []
    assert layer_violations(graph, "pkg", ["top", "base"]) == []
    assert sys.modules.get("pkg") is None  # read, never imported
