"""The service's rooms import each other without a circle, and nothing outside the service
imports it but its tests, the scripts and the benchmarks (and the ``aae`` command, which
serves it and draws its figures offline).

Read from the source with ``ast``, every import counted wherever it is (a lazy import
in a function is a dependency too), except those under ``if TYPE_CHECKING:``, which
annotations alone use."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# importers allowed outside service/; cli: ``aae serve`` and ``aae figure``
OUTSIDE_ALLOWED = {"tests", "scripts", "benchmarks", "cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in (ROOT / "service").rglob("*.py")}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _type_checking(child):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def imported(path: Path) -> set[str]:
    """The modules ``path`` imports: ``from a.b import c`` is ``a.b.c`` where that is a
    module of the service, else ``a.b``; relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            out.add(candidate if candidate in MODULES else base)
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the service modules it imports (not its own parent packages, which
    Python imports first anyway)."""
    return {name: {target for target in imported(path) if target in MODULES
                   and not name.startswith(target + ".")}
            for name, path in MODULES.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the path around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read():
    edges = graph()
    assert {"service.core.errors", "service.inference.batching", "service.jobs.queue",
            "service.figures.plots"} <= set(edges)
    assert "service.core.errors" in edges["service.inference.batching"]
    assert "service.inference.metrics" in edges["service.inference.batching"]
    assert "service.v2" in edges["service.app"]  # from service import v2: the package
    assert "service.v2.inference" in edges["service.v2.routes"]  # a module of the package
    # under TYPE_CHECKING only: the metrics name the batcher's and the registry's types
    assert not edges["service.inference.metrics"] & {"service.inference.batching",
                                                      "service.inference.registry"}
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_service_has_no_import_circle():
    found = cycle(graph())
    assert found is None, "import circle: " + " -> ".join(found)


def test_errors_import_no_metrics():
    """A shed request is counted where it is shed, not by the exception."""
    assert not {m for m in imported(MODULES["service.core.errors"]) if "metrics" in m}


def test_only_tests_scripts_benchmarks_and_the_command_import_the_service():
    offenders = []
    for path in ROOT.rglob("*.py"):
        top = path.relative_to(ROOT).parts[0]
        if top == "service" or top in OUTSIDE_ALLOWED or top.startswith(".") \
                or top.endswith(".egg-info"):
            continue
        names = {n.split(".")[0] for n in imported(path)}
        if "service" in names:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"import the service: {offenders}"
