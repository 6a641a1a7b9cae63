"""result() waiters on PostgreSQL: one LISTEN per process, no lock on the job's row, polling as a fallback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections

from aio_async import ResultTimeout, aresult, schedule
from aio_async.models import Job
from aio_async.store.drivers.psycopg import connection_params
from tests.app import tasks
from tests.conftest import beside, drain

pytestmark = pytest.mark.django_db(transaction=True)


#: How a listener's backend shows in pg_stat_activity: its last statement.
LISTENING = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN aio_async_done'"
)


@pytest.fixture
async def observer() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of the test's own to the test database, to look at the server from outside."""
    async with await psycopg.AsyncConnection.connect(**connection_params(connection), autocommit=True) as db:
        yield db


async def one(db: psycopg.AsyncConnection[Any], query: str, *params: object) -> Any:
    row = await (await db.execute(query, params)).fetchone()
    return None if row is None else row[0]


async def backends(db: psycopg.AsyncConnection[Any]) -> int:
    """Client connections to the test database."""
    return int(
        await one(
            db,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend'",
        )
    )


async def waits(db: psycopg.AsyncConnection[Any]) -> int:
    """Waits recorded in the waiters' table."""
    return int(await one(db, "SELECT count(*) FROM aio_async_waiter"))


async def soon(check: Any, within: float = 10.0) -> None:
    """Wait for the coroutine function ``check`` to return something true."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def scheduled(count: int) -> list[Job]:
    return [await sync_to_async(schedule)(tasks.add, [n, n]) for n in range(count)]


@pytest.mark.postgres_only
@pytest.mark.psycopg3
async def test_a_waiter_takes_no_lock_on_a_queued_jobs_row(observer: psycopg.AsyncConnection[Any]) -> None:
    [job] = await scheduled(1)
    params = connection_params(connection)
    async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as claimer:
        async with claimer.transaction():
            # The row held as a worker's claim holds it (FOR UPDATE) while a waiter registers.
            await claimer.execute("SELECT id FROM aio_async_job WHERE id = %s FOR UPDATE", [job.pk])
            pid = claimer.info.backend_pid
            waiting = asyncio.create_task(aresult(job, timeout=20))

            async def registered_or_blocked() -> bool:
                blocked = await one(
                    observer,
                    "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    pid,
                )
                return bool(blocked) or await waits(observer) == 1

            await soon(registered_or_blocked)
            assert (
                await one(
                    observer,
                    "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    pid,
                )
                == 0
            )
            assert not waiting.done()
            await claimer.execute(
                "UPDATE aio_async_job SET status = 'succeeded', result = '[7]', finished = now() "
                "WHERE id = %s",
                [job.pk],
            )
        assert await waiting == [7]
    assert await waits(observer) == 0


@pytest.mark.postgres_only
@pytest.mark.psycopg3
async def test_while_a_waiter_waits_the_jobs_row_can_be_locked_at_once(
    observer: psycopg.AsyncConnection[Any],
) -> None:
    [job] = await scheduled(1)
    waiting = asyncio.create_task(aresult(job, timeout=20))
    await soon(lambda: _equals(waits(observer), 1))
    async with observer.transaction():
        assert (
            await one(observer, "SELECT id FROM aio_async_job WHERE id = %s FOR UPDATE NOWAIT", job.pk)
            == job.pk
        )
    async with beside(poll_interval=60.0):
        assert await waiting == 0


async def _equals(count: Any, expected: int) -> bool:
    return bool(await count == expected)


@pytest.mark.postgres_only
@pytest.mark.psycopg3
async def test_forty_waiters_add_one_connection_and_each_gets_its_result(
    observer: psycopg.AsyncConnection[Any],
) -> None:
    jobs = await scheduled(40)
    before = await backends(observer)
    waiting = [asyncio.create_task(aresult(job, timeout=60)) for job in jobs]

    async def registered_or_connected() -> bool:
        return await waits(observer) == 40 or await backends(observer) - before > 1

    await soon(registered_or_connected)
    assert await backends(observer) - before <= 1
    assert len(await (await observer.execute(LISTENING)).fetchall()) == 1
    async with beside(poll_interval=60.0):
        assert await asyncio.gather(*waiting) == [2 * n for n in range(40)]
    assert await waits(observer) == 0


@pytest.mark.postgres_only
@pytest.mark.psycopg3
async def test_after_the_listeners_backend_is_terminated_waiters_still_get_their_results(
    observer: psycopg.AsyncConnection[Any],
) -> None:
    jobs = await scheduled(10)
    waiting = [asyncio.create_task(aresult(job, timeout=60)) for job in jobs]
    await soon(lambda: _equals(waits(observer), 10))
    [(listener,)] = await (await observer.execute(LISTENING)).fetchall()
    assert await one(observer, "SELECT pg_terminate_backend(%s)", listener)
    await soon(lambda: _equals(_listening(observer, other_than=listener), 1))
    began = time.monotonic()
    async with beside(poll_interval=60.0):
        assert await asyncio.gather(*waiting) == [2 * n for n in range(10)]
    assert time.monotonic() - began < 5


async def _listening(db: psycopg.AsyncConnection[Any], other_than: int) -> int:
    return sum(pid != other_than for (pid,) in await (await db.execute(LISTENING)).fetchall())


def test_a_wait_for_a_job_that_finished_before_answers_at_once() -> None:
    job = schedule(tasks.add, [20, 22])
    drain()
    began = time.monotonic()
    assert asyncio.run(aresult(job, timeout=5)) == 42
    assert time.monotonic() - began < 0.5


@pytest.fixture
def unreachable() -> Iterator[str]:
    """An alias whose server refuses connections, as a LISTEN alias that cannot be had."""
    settings_dict = dict(connections["default"].settings_dict, HOST="127.0.0.1", PORT="1")
    connections.settings["unreachable"] = settings_dict
    settings.DATABASES["unreachable"] = settings_dict
    try:
        yield "unreachable"
    finally:
        connections.settings.pop("unreachable", None)
        settings.DATABASES.pop("unreachable", None)


@pytest.mark.postgres_only
@pytest.mark.psycopg3
async def test_without_a_listening_connection_waiters_poll_and_say_so_once(
    unreachable: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.AIO_ASYNC = {**getattr(settings, "AIO_ASYNC", {}), "LISTEN": unreachable}
    jobs = await scheduled(5)
    with caplog.at_level(logging.INFO, logger="aio_async.results"):
        waiting = [asyncio.create_task(aresult(job, timeout=30)) for job in jobs]
        async with beside(poll_interval=0.05, listen=False):
            assert await asyncio.gather(*waiting) == [2 * n for n in range(5)]
            [later] = await scheduled(1)
            assert await aresult(later, timeout=30) == 0
    said = [record for record in caplog.records if getattr(record, "action", None) == "results_polling"]
    assert len(said) == 1
    assert "result() waiters on database 'unreachable' poll" in said[0].getMessage()


@pytest.mark.postgres_only
@pytest.mark.psycopg3
async def test_a_wait_that_times_out_removes_its_row(observer: psycopg.AsyncConnection[Any]) -> None:
    [job] = await scheduled(1)
    with pytest.raises(ResultTimeout):
        await aresult(job, timeout=0.3)
    assert await waits(observer) == 0
    assert await one(observer, "SELECT status FROM aio_async_job WHERE id = %s", job.pk) == "queued"
