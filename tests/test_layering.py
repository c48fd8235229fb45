"""The layering of docs/design.md ("What must never happen"), checked on the source.

An AST walk over src/superconv collects every ``import superconv...`` and
``from superconv... import ...``, at module level and inside functions (the lazy
imports that keep ``superconv --help`` fast still make one module depend on
another), and builds the module graph from them. ``if TYPE_CHECKING:`` imports
count too: a type-only import is still a circle in the design.

Checked: (a) the pure modules reach nothing of models, data, train, cli or
integrations, directly or not; (b) no import cycles (one allowed edge, named
below); (c) report imports no runner, train or fit, and reaches no runner; the
runner takes experiments and imports no paper; (d) only ``__main__`` imports cli.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "superconv"

PURE = ("schedules", "estimator", "range_test", "suggest", "step")
HEAVY = ("models", "data", "train", "cli", "integrations")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The module (or package) of the graph that ``name`` names: the longest known prefix."""
    known = _modules()
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return name


def _imports_of(module: str) -> set[str]:
    """The superconv modules ``module`` imports, at any depth of its code."""
    path = _modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .mod import y
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from superconv import train": the submodule train, where there is one
            names = [f"{stem}.{alias.name}" for alias in node.names] + [stem]
        else:
            continue
        for name in names:
            if name == "superconv" or name.startswith("superconv."):
                target = _resolve(name)
                if target != module and target != "superconv":
                    found.add(target)
    return found


@cache
def graph() -> dict[str, frozenset[str]]:
    return {m: frozenset(_imports_of(m)) for m in _modules()}


def _top(module: str) -> str:
    """``superconv.models.resnet`` -> ``models``."""
    return module.split(".")[1] if module.count(".") else ""


def _reachable(start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports, directly or not, with one import path to it."""
    g = graph()
    paths = {start: [start]}
    todo = [start]
    while todo:
        here = todo.pop()
        for nxt in sorted(g[here]):
            if nxt not in paths:
                paths[nxt] = paths[here] + [nxt]
                todo.append(nxt)
    return paths


def test_the_graph_sees_the_package():
    g = graph()
    assert {"superconv.cli", "superconv.schedules", "superconv.report"} <= set(g)
    assert "superconv.schedules" in g["superconv.train"]  # a module-level import
    assert "superconv.train" in g["superconv.fit"]  # a lazy one, inside a function


@pytest.mark.parametrize("pure", PURE)
def test_the_pure_modules_import_no_model_data_training_or_shell(pure):
    paths = _reachable(f"superconv.{pure}")
    bad = {m: p for m, p in paths.items() if _top(m) in HEAVY}
    assert not bad, "\n".join(" -> ".join(p) for p in bad.values())


def _cycles() -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if (v, w) in ALLOWED_EDGES:
                continue
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


# No loop is allowed (range_test's 0.1 alias of suggest was removed to close the last one).
ALLOWED_EDGES: set[tuple[str, str]] = set()


def test_no_import_cycles():
    cycles = _cycles()
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle(monkeypatch):
    g = dict(graph())
    g["superconv.errors"] = g["superconv.errors"] | {"superconv.report"}  # report -> errors
    monkeypatch.setattr(sys.modules[__name__], "graph", lambda: g)
    assert any("superconv.report" in c and "superconv.errors" in c for c in _cycles())


def test_report_never_trains():
    direct = graph()["superconv.report"]
    for banned in ("superconv.runner", "superconv.train", "superconv.fit"):
        assert banned not in direct, f"report imports {banned}"
    # Nor the runner by way of another module (the circle report <-> experiments was one).
    # train and fit it does reach, through the catalogue: paper.project -> suggest_bench,
    # whose tasks take fit's budget split (plan_budget), and fit imports train lazily.
    reach = _reachable("superconv.report")
    assert "superconv.runner" not in reach, " -> ".join(reach["superconv.runner"])


def test_the_catalogue_and_the_plan_types_know_no_runner():
    for module in ("superconv.paper", "superconv.plan", "superconv.runs"):
        reach = _reachable(module)
        assert "superconv.runner" not in reach, " -> ".join(reach["superconv.runner"])
    # The runner takes Experiment objects: it imports nothing of the paper (its report does).
    paper = sorted(
        m for m in graph()["superconv.runner"] if m.split(".")[:2] == ["superconv", "paper"]
    )
    assert not paper, paper


def test_only_main_imports_the_cli():
    users = sorted(m for m, deps in graph().items() if "superconv.cli" in deps)
    assert users == ["superconv.__main__"], users
