"""The package's shape, read from its source: layers, no import circle, one door to the database.

docs/architecture.md explains the layers. Imports are read from the source with ``ast``,
function-level and ``TYPE_CHECKING`` ones included: a module may import its own layer and the
layers below, never above, and no modules may import each other in a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import aio_async

PACKAGE = Path(aio_async.__file__).resolve().parent

#: Each layer, lowest first: a module's layer is that of the longest prefix of its name here.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "ground",
        (
            "values",
            "errors",
            "context",
            "payload",
            "schedules",
            "retention",
            "conf",
            "embedded",
        ),
    ),
    ("policies", ("allow", "backoff", "startup")),
    ("store", ("store",)),
    ("tables", ("models",)),
    ("observability", ("log", "signals")),
    ("operations", ("api", "bridge", "steps", "results", "readmodel", "queues", "cron", "health_report")),
    ("loop", ("executor", "worker")),
    (
        "faces",
        (
            "",  # the package's face, aio_async/__init__.py
            "__main__",
            "cli",
            "supervisor",
            "checks",
            "apps",
            "admin",
            "views",
            "urls",
            "metrics",
            "otel",
            "backends",
            "testing",
            "management",
            "demo",
            "migrations",
            "templatetags",
        ),
    ),
]


def _name(path: Path) -> str:
    """``aio_async.store.operations`` for ``aio_async/store/operations.py``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    """The rank of ``module``'s layer (the longest matching prefix decides)."""
    inner = module.removeprefix("aio_async").removeprefix(".")
    best: tuple[int, int] | None = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = inner == prefix or inner.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and to docs/architecture.md")
    return best[1]


def imports(module: str) -> Iterator[tuple[str, int]]:
    """The package's modules that ``module`` imports anywhere in its source, with the line."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from aio_async.store import operations`` imports the submodule when there is one.
            targets = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target in MODULES and target != module:
                yield target, node.lineno


GRAPH = {module: sorted({target for target, _ in imports(module)}) for module in MODULES}


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        layer(module)


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{module}:{line} imports {target} ({LAYERS[layer(module)][0]} imports {LAYERS[layer(target)][0]})"
        for module in MODULES
        for target, line in imports(module)
        if layer(target) > layer(module)
    ]
    assert upward == []


def _circles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in GRAPH:
        if module not in index:
            visit(module)
    return found


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert _circles() == []


def test_the_circle_finder_finds_a_circle() -> None:
    GRAPH["aio_async.values"].append("aio_async.conf")
    GRAPH["aio_async.conf"].append("aio_async.values")
    try:
        assert ["aio_async.conf", "aio_async.values"] in _circles()
    finally:
        GRAPH["aio_async.values"].remove("aio_async.conf")
        GRAPH["aio_async.conf"].remove("aio_async.values")


#: What running SQL by hand looks like, whatever the connection.
SQL_CALLS = {"execute", "executemany", "cursor", "raw", "extra", "RawSQL"}
#: Writes of a job's status through the ORM.
STATUS_WRITES = {"update", "update_or_create", "bulk_update"}


def _outside_the_store() -> Iterator[tuple[str, ast.Call]]:
    """Every call in the package's modules but the store's (and the migrations', frozen history)."""
    for module, path in MODULES.items():
        if module.startswith(("aio_async.store", "aio_async.migrations", "aio_async.demo.migrations")):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                yield module, node


def _called(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return node.func.id if isinstance(node.func, ast.Name) else None


def test_no_module_outside_the_store_runs_sql() -> None:
    found = [
        f"{module}:{node.lineno} {_called(node)}()"
        for module, node in _outside_the_store()
        if _called(node) in SQL_CALLS
    ]
    assert found == []


def _writes_status(node: ast.AST) -> bool:
    called = _called(node)
    if called not in STATUS_WRITES and called != "save":
        return False
    assert isinstance(node, ast.Call)
    for keyword in node.keywords:
        if called in STATUS_WRITES and keyword.arg == "status":
            return True
        if keyword.arg in ("fields", "update_fields") and "status" in ast.unparse(keyword.value):
            return True
    return called == "bulk_update" and any("status" in ast.unparse(arg) for arg in node.args[1:])


def test_no_module_outside_the_store_writes_a_jobs_status() -> None:
    found = [f"{module}:{node.lineno}" for module, node in _outside_the_store() if _writes_status(node)]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "Job.objects.filter(pk=1).update(status=Status.QUEUED)",
        "Job.objects.bulk_update(jobs, ['status'])",
        "job.save(update_fields=['status', 'run_after'])",
        "connection.cursor().execute('UPDATE aio_async_job SET status = %s', ['queued'])",
    ],
)
def test_the_door_checks_see_what_they_look_for(source: str) -> None:
    nodes = list(ast.walk(ast.parse(source)))
    assert any(_writes_status(node) or _called(node) in SQL_CALLS for node in nodes)
