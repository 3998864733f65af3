"""The package's dependency rules (docs/architecture.md), read from every ``import`` line of the source:
no import cycle between modules, no private name imported from another module, no library module
importing ``behaviorlm.testing``, and no model module importing ``behaviorlm.evaluation``."""

from __future__ import annotations

import ast
from pathlib import Path

import behaviorlm

ROOT = Path(behaviorlm.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, list[tuple[str, list[str], int]]]:
    """Module -> [(imported module, imported names, line)] for imports of behaviorlm modules."""
    graph: dict[str, list[tuple[str, list[str], int]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        edges = graph.setdefault(_module_name(path), [])
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("behaviorlm"):
                edges.append((node.module, [a.name for a in node.names], node.lineno))
            elif isinstance(node, ast.Import):
                edges += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("behaviorlm.")]
    return graph


def _target(graph: dict, module: str, name: str) -> str:
    """``from package import submodule`` names the submodule; anything else names ``module``."""
    return f"{module}.{name}" if f"{module}.{name}" in graph else module


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph()
    edges = {
        m: {_target(graph, t, n) for t, names, _ in out for n in names or [""]} for m, out in graph.items()
    }
    edges = {
        m: {t.rstrip(".") for t in ts if t.rstrip(".") in graph and t.rstrip(".") != m}
        for m, ts in edges.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_layer_rules() -> None:
    graph = import_graph()
    problems = []
    for module, out in graph.items():
        for target, names, line in out:
            where = f"{module}:{line}"
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"{where} imports private {private} from {target}")
            if target.startswith("behaviorlm.testing") and not module.startswith("behaviorlm.testing"):
                problems.append(f"{where}: a library module imports {target}")
            if module.startswith("behaviorlm.models") and target.startswith("behaviorlm.evaluation"):
                problems.append(f"{where}: a model module imports {target}")
    assert not problems, "\n".join(problems)


def test_the_checks_see_a_cycle_and_a_private_import(tmp_path, monkeypatch) -> None:
    # The rules above must be able to fail: a planted cycle and a planted private import are found.
    package = tmp_path / "behaviorlm"
    (package / "a").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a" / "__init__.py").write_text("")
    (package / "a" / "x.py").write_text("from behaviorlm.a.y import _helper\n")
    (package / "a" / "y.py").write_text("from behaviorlm.a import x\n\ndef _helper():\n    pass\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", package)
    try:
        test_no_import_cycle_between_modules()
    except AssertionError as exc:
        assert "behaviorlm.a.x -> behaviorlm.a.y -> behaviorlm.a.x" in str(exc)
    else:
        raise AssertionError("the planted cycle was not found")
    try:
        test_layer_rules()
    except AssertionError as exc:
        assert "imports private ['_helper'] from behaviorlm.a.y" in str(exc)
    else:
        raise AssertionError("the planted private import was not found")
