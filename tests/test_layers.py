"""The import graph: arrows point down. Read from the source (no import runs), one node
per package of ``server/`` (its top-level modules each a node) and two for ``workers/``:
the job machinery that runs the domains' tasks, and the runtime those tasks use."""

from __future__ import annotations

import ast
import functools
from collections import defaultdict

from tests.processes import REPO

_MACHINERY = {"runner", "broker", "inprocess", "machinery", "__main__"}

# The only arrows allowed to point up, each with the reason written beside it in the code.
UPWARD = {
    ("workers:runtime", "demo"): "workers/ml/gen_allowlist.py trains on the demo's shapes",
    ("web", "app"): "server/web/openapi.py builds the app it documents",
}


def _node(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "workers":
        return (
            "workers:machinery" if len(parts) > 1 and parts[1] in _MACHINERY else "workers:runtime"
        )
    if parts[0] != "server" or len(parts) == 1:
        return None
    return parts[1]


@functools.cache
def _sources() -> dict[str, tuple[str, list[str]]]:
    """Each file of ``server/`` and ``workers/`` by its dotted path (``.__init__`` kept):
    its path, and every module name its imports mention (``from a import b`` mentions
    ``a`` and ``a.b``, since b may be a module), TYPE_CHECKING imports too."""
    found: dict[str, tuple[str, list[str]]] = {}
    for top in ("server", "workers"):
        for path in (REPO / top).rglob("*.py"):
            rel = path.relative_to(REPO)
            names: list[str] = []
            for stmt in ast.walk(ast.parse(path.read_text())):
                if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
                    names += [stmt.module, *(f"{stmt.module}.{a.name}" for a in stmt.names)]
                elif isinstance(stmt, ast.Import):
                    names += [a.name for a in stmt.names]
            found[".".join(rel.with_suffix("").parts)] = (str(rel), names)
    return found


def _graph() -> dict[str, dict[str, set[str]]]:
    """node -> imported node -> the files that import it."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for module, (rel, names) in _sources().items():
        source = _node(module)
        assert source is not None
        for name in names:
            target = _node(name)
            # "from server import x" names x's package; "server" alone names none.
            if target and target != source and name.split(".")[0] in ("server", "workers"):
                edges[source][target].add(rel)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_beyond_the_two_named_upward_imports() -> None:
    edges = _graph()
    for (source, target), why in UPWARD.items():
        assert target in edges[source], f"stale exception ({why}): remove it from UPWARD"
    graph = {
        source: {t for t in targets if (source, t) not in UPWARD}
        for source, targets in edges.items()
    }
    cycles = _cycles(graph)
    detail = {
        " <-> ".join(c): {
            f"{s} -> {t}": sorted(edges[s][t]) for s in c for t in c if t in graph.get(s, ())
        }
        for c in cycles
    }
    assert not cycles, detail


def _module_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports."""
    sources = {m.removesuffix(".__init__"): names for m, (_, names) in _sources().items()}
    # A package's __init__ is not an arrow to every module under it.
    return {m: {n for n in names if n in sources and n != m} for m, names in sources.items()}


def test_no_module_imports_itself_back() -> None:
    assert not _cycles(_module_graph())


def test_the_orm_tables_are_a_leaf_that_imports_only_the_kit() -> None:
    assert set(_graph()["models"]) <= {"kit"}


def test_the_api_reaches_the_job_machinery_only_through_its_builder() -> None:
    users = {
        path
        for source, targets in _graph().items()
        if source not in ("workers:machinery", "workers:runtime")
        for path in targets.get("workers:machinery", ())
    }
    assert users <= {"server/app.py", "server/cli.py"}, users
