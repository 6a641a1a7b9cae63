"""Shared fixtures: the database under test, and a worker to drain the queue."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from django.conf import settings
from django.db import connection, connections

from aio_async.conf import QueueSettings, get_settings
from aio_async.executor import Executor
from aio_async.store.results import close_listeners
from aio_async.values import Outcome

HERE = Path(__file__).resolve().parent

#: Without psycopg 3 (a project on psycopg2), what needs it is not collected: the worker's own
#: asyncio connection and LISTEN, the outage tests' throw-away cluster, and the frontier's tests
#: (their side connections hold a snapshot and read plans).
PSYCOPG3 = importlib.util.find_spec("psycopg") is not None
NEEDS_PSYCOPG3 = {
    HERE / "integration" / "test_frontier.py",
    HERE / "integration" / "test_postgres.py",
    HERE / "integration" / "test_listen.py",
    HERE / "acceptance" / "test_outages.py",
    HERE / "integration" / "test_results_listener.py",
}


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Leave out the modules that need psycopg 3 when it is not installed.

    A hook, not ``collect_ignore``: pytest reads that list from the nearest conftest only, and
    ``integration/conftest.py`` has one of its own.
    """
    return True if not PSYCOPG3 and collection_path in NEEDS_PSYCOPG3 else None


def pytest_report_header() -> str:
    """Say which database and driver the run uses."""
    driver = "psycopg 3" if PSYCOPG3 else "psycopg2"
    return f"aio_async test database: {settings.DATABASES['default']['ENGINE']} ({driver})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) what another database or driver's run covers: PostgreSQL-only tests on
    SQLite, SQLite-only ones on PostgreSQL, psycopg 3 ones on psycopg2 and psycopg2 ones on psycopg 3."""
    unavailable = {"psycopg2_only"} if PSYCOPG3 else {"psycopg3"}
    if not str(settings.DATABASES["default"]["ENGINE"]).endswith("postgresql"):
        unavailable |= {"postgres_only", "psycopg3", "psycopg2_only"}
    else:
        unavailable |= {"sqlite_only"}
    if not unavailable:
        return
    keep = [item for item in items if not any(item.get_closest_marker(name) for name in unavailable)]
    dropped = [item for item in items if any(item.get_closest_marker(name) for name in unavailable)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def queue_settings(**overrides: Any) -> QueueSettings:
    """The test settings with some fields replaced."""
    return dataclasses.replace(get_settings(), **overrides)


async def adrain(**overrides: Any) -> dict[Outcome, int]:
    """Run a worker until no job is due; return its outcomes."""
    executor = Executor(settings=queue_settings(**overrides))
    return dict(await executor.run(until_empty=True))


def drain(**overrides: Any) -> dict[Outcome, int]:
    """adrain() from sync code."""
    return asyncio.run(adrain(**overrides))


@contextlib.asynccontextmanager
async def beside(**overrides: Any) -> AsyncIterator[Executor]:
    """A worker running beside the test, with these settings; stopped and awaited at the end."""
    executor = Executor(settings=queue_settings(**overrides))
    running = asyncio.create_task(executor.run())
    try:
        yield executor
    finally:
        executor.stop()
        await running


async def until(predicate: Callable[[], bool], within: float = 10.0) -> float:
    """Wait for ``predicate`` (run in a thread, it may query); return the seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < within:
        if await sync_to_async(predicate)():
            return time.monotonic() - began
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture(autouse=True)
def _close_async_orm_connection(request: pytest.FixtureRequest) -> Iterator[None]:
    """Close the connection Django's async ORM opened in asgiref's thread after an async test.

    Outside an ``async_to_sync`` caller, ``sync_to_async(thread_sensitive=True)`` runs in one
    shared thread whose connection nothing else would close before the test database is
    dropped.
    """
    yield
    if inspect.iscoroutinefunction(request.function) and request.node.get_closest_marker("django_db"):
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture(autouse=True)
def _close_result_listeners(request: pytest.FixtureRequest) -> Iterator[None]:
    """Close the connection that ``result()`` waiters LISTEN on, before the test database is dropped."""
    yield
    if request.node.get_closest_marker("django_db"):
        close_listeners()


@pytest.fixture
def is_postgres() -> bool:
    """True when the tests run on PostgreSQL."""
    return connection.vendor == "postgresql"


@pytest.fixture
def worker_drain() -> Callable[..., dict[Outcome, int]]:
    """The drain() helper as a fixture."""
    return drain


#: Valid JSON that both databases store but Python will not decode: an integer of more digits
#: than ``sys.get_int_max_str_digits()`` allows.
UNDECODABLE = f"[1, {'7' * 5000}]"


def write_raw_args(job_id: int, text: str) -> None:
    """Store ``text`` as a job's arguments, past every check that ``schedule`` makes."""
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE aio_async_job SET args = %s{cast} WHERE id = %s", [text, job_id])
