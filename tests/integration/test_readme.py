"""The README and the pages of docs/ say what the code does: every ``python`` block runs.

Each block of ``README.md`` and ``docs/*.md`` is executed against the test database. A page's
blocks share one namespace, in order, as a reader reads them: the module ``myapp.tasks``,
holding the names of ``tests/app/docs.py`` (so that what a block defines is importable, as in
an app), while ``tests/app/docs.py`` stands for the rest of the docs' example app (``myapp``,
``myapp.models``, ``myapp.views``). A block whose code waits for a job's result runs beside a
worker. A block that defines ``test_*`` functions is a test module of its own (a namespace of
its own, so it must import what it uses); each is called, with a test client, on an emptied
queue, in a transaction rolled back after it. A block marked ``<!-- snippet: compile -->`` (a
fragment that cannot run alone) is compiled and its imports executed. The API table's health
row is checked against what ``health()`` returns, and what the operating page says of paused
queues against the health endpoint.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import datetime
import inspect
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections, transaction
from django.test import Client, override_settings
from django.urls import clear_url_caches
from django.utils import timezone

import aio_async.allow
import aio_async.cron
from aio_async import health, schedule
from aio_async.testing import clear_queue
from tests.app import docs, tasks
from tests.conftest import beside

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMPILE_ONLY = "<!-- snippet: compile -->"
_BLOCK = re.compile(r"^(?P<mark>[^\n]*\n)?```python\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)
#: The docs' example app, as its snippets import it.
_EXAMPLE_APP = ("myapp", "myapp.models", "myapp.tasks", "myapp.views")


@dataclasses.dataclass(frozen=True)
class Snippet:
    """One ``python`` block of a page."""

    page: str
    line: int
    code: str
    compile_only: bool

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def snippets() -> list[Snippet]:
    """Every ``python`` block of the README and of docs/*.md, in order."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("code"))
            mark = (match.group("mark") or "").strip()
            code = match.group("code")
            found.append(Snippet(str(page.relative_to(ROOT)), line, code, mark == COMPILE_ONLY))
    return found


SNIPPETS = snippets()


@pytest.fixture
def example_app() -> Iterator[None]:
    """``myapp`` is allowed and the URLs are its; what the snippets register is forgotten at the end."""
    registry = getattr(aio_async.allow, "_registry", {})
    declared = getattr(aio_async.cron, "_DECLARED", {})
    saved = (dict(registry), dict(declared))
    before = {name: sys.modules.get(name) for name in _EXAMPLE_APP}
    sys.modules.update(dict.fromkeys(_EXAMPLE_APP, docs))
    try:
        allowed = {**settings.AIO_ASYNC, "ALLOWED_MODULES": ["myapp", "tests.app"]}
        with override_settings(ROOT_URLCONF="myapp.tasks", AIO_ASYNC=allowed):
            yield
    finally:
        clear_url_caches()
        for name, module in before.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        registry.clear()
        registry.update(saved[0])
        declared.clear()
        declared.update(saved[1])


def _imports_only(node: ast.stmt) -> bool:
    """An import, or a ``try`` of imports with other imports as its fallback."""
    if isinstance(node, ast.Try):
        handled = [child for handler in node.handlers for child in handler.body]
        return all(_imports_only(child) for child in [*node.body, *handled])
    return isinstance(node, ast.Import | ast.ImportFrom)


def _free_names(tree: ast.AST) -> set[str]:
    """The names the code reads and never assigns."""
    names = [node for node in ast.walk(tree) if isinstance(node, ast.Name)]
    stored = {node.id for node in names if not isinstance(node.ctx, ast.Load)}
    return {node.id for node in names if isinstance(node.ctx, ast.Load)} - stored


class _Rollback(Exception):
    """Ends the transaction a snippet's test function ran in."""


def _call_tests(namespace: dict[str, Any], defined: set[str]) -> None:
    """Call the ``test_*`` functions the snippet defined, each on an emptied queue, rolled back."""
    for name in sorted(defined):
        value = namespace[name]
        if not (name.startswith("test_") and inspect.isfunction(value)):
            continue
        fixtures = {"client": Client(), "db": None}
        clear_url_caches()
        try:
            with transaction.atomic():
                clear_queue()
                docs.Greeting.objects.all().delete()
                value(**{parameter: fixtures[parameter] for parameter in inspect.signature(value).parameters})
                raise _Rollback
        except _Rollback:
            pass


def _run(snippet: Snippet, namespace: dict[str, Any]) -> None:
    """Execute the snippet in its page's namespace (or, when marked, compile it and run its imports)."""
    tree = ast.parse(snippet.code, filename=snippet.id)
    if snippet.compile_only:
        compile(tree, snippet.id, "exec")
        imports: list[ast.stmt] = [node for node in tree.body if _imports_only(node)]
        exec(compile(ast.Module(body=imports, type_ignores=[]), snippet.id, "exec"), namespace)
        return
    if any(isinstance(node, ast.FunctionDef) and node.name.startswith("test_") for node in tree.body):
        namespace = {"__name__": "test_myapp"}  # a test module of its own: it imports what it uses
    namespace.update(docs.made(_free_names(tree) - set(namespace)))
    before = set(namespace)
    exec(compile(tree, snippet.id, "exec"), namespace)
    _call_tests(namespace, set(namespace) - before)


def _run_and_close(snippet: Snippet, namespace: dict[str, Any]) -> None:
    """_run() in a thread of its own, whose connections are closed at the end."""
    try:
        _run(snippet, namespace)
    finally:
        connections.close_all()


def test_the_pages_have_snippets_and_few_are_only_compiled() -> None:
    assert len(SNIPPETS) >= 40
    assert sum(snippet.compile_only for snippet in SNIPPETS) <= 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("example_app")
@pytest.mark.parametrize("page", sorted({snippet.page for snippet in SNIPPETS}))
async def test_the_snippets_of_the_page_run_in_order(page: str) -> None:
    """A page's snippets share one namespace, as a reader reads them: later ones use earlier ones."""
    # What the snippets define is importable, as in an app: from myapp.tasks, or myapp.views.
    page_module = types.ModuleType("myapp.tasks")
    package = types.ModuleType("myapp")
    package.models, package.tasks, package.views = docs, page_module, page_module  # type: ignore[attr-defined]
    sys.modules.update({"myapp": package, "myapp.tasks": page_module, "myapp.views": page_module})
    clear_url_caches()
    namespace = vars(page_module)
    namespace.update({name: getattr(docs, name) for name in docs.__all__ if name != "made"})
    for snippet in [snippet for snippet in SNIPPETS if snippet.page == page]:
        async with contextlib.AsyncExitStack() as stack:
            if re.search(r"\bresult\(", snippet.code) and not snippet.compile_only:
                # The worker's own database calls take asgiref's shared thread: wait in another.
                await stack.enter_async_context(beside(poll_interval=0.05))
                await sync_to_async(_run_and_close, thread_sensitive=False)(snippet, namespace)
            else:
                await sync_to_async(_run, thread_sensitive=True)(snippet, namespace)


def _api_row(name: str) -> str:
    """The text of the API table's row whose first cell starts with ``name``."""
    table = (ROOT / "docs" / "api.md").read_text()
    [row] = [line for line in table.splitlines() if line.startswith(f"| `{name}")]
    return row


@pytest.mark.django_db
def test_the_health_row_names_every_key_health_returns() -> None:
    schedule(tasks.add, [1, 2])
    report = health()
    row = _api_row("health(")
    named = set(re.findall(r"`(\w+)`", row))
    assert set(report) - named == set()
    by_name = row[row.index("`by_name`") :]
    assert set(report["by_name"]["tests.app.tasks.add"]) - set(re.findall(r"`(\w+)`", by_name)) == set()


@pytest.mark.django_db
def test_a_long_paused_queue_does_not_turn_the_health_endpoint_503_as_operating_says() -> None:
    """docs/operating.md: paused queues are left out of the MAX_DUE_AGE check and listed."""
    from aio_async.models import Queue, Worker
    from aio_async.queues import pause, resume

    page = (ROOT / "docs" / "operating.md").read_text()
    assert "a pause of any length never turns it 503 on its own" in page
    now = timezone.now()
    Worker.objects.create(
        id="host:1:0", host="host", pid=1, queues="mail", concurrency=1, started=now, heartbeat=now
    )
    schedule(tasks.add, [1, 2], queue="mail", run_after=now - datetime.timedelta(hours=2))
    pause("mail", by="ops")
    Queue.objects.filter(name="mail").update(changed=now - datetime.timedelta(hours=2))
    staff = Client()
    staff.force_login(User.objects.create_user("ops", password="pw", is_staff=True))
    health_settings = {**settings.AIO_ASYNC, "HEALTH": {"MAX_DUE_AGE": 60}}
    with override_settings(AIO_ASYNC=health_settings):
        response = staff.get("/queue/health/")
        assert (response.status_code, response.json()["problems"]) == (200, [])
        assert response.json()["paused_queues"] == ["mail"]
        assert response.json()["oldest_due_age_seconds"] > 7000  # health() itself counts every queue
        resume("mail")
        response = staff.get("/queue/health/")
    assert response.status_code == 503
    assert response.json()["paused_queues"] == []
    assert response.json()["problems"][0].startswith("the oldest due job has waited")
