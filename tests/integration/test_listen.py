"""Where workers LISTEN: the queue's database, a direct connection beside a pooler, or nowhere."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections, transaction

from aio_async import aresult, checks, schedule
from aio_async.executor import Executor
from aio_async.models import Job
from aio_async.store.drivers.psycopg import listen_works
from aio_async.worker.threads import open_store
from tests.app import tasks
from tests.conftest import queue_settings, until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_only, pytest.mark.psycopg3]


@pytest.fixture
def direct() -> Iterator[str]:
    """A second alias of the test database, as a direct connection beside a pooled one would be."""
    settings_dict = dict(connections["default"].settings_dict)
    connections.settings["direct"] = settings_dict
    settings.DATABASES["direct"] = settings_dict  # the same dict as connections' (Django shares it)
    try:
        yield "direct"
    finally:
        connections["direct"].close()
        connections.settings.pop("direct", None)
        settings.DATABASES.pop("direct", None)


@contextlib.asynccontextmanager
async def worker(**overrides: object) -> AsyncIterator[Executor]:
    executor = Executor(settings=queue_settings(**overrides))
    running = asyncio.create_task(executor.run())
    try:
        await asyncio.sleep(0.5)  # started, listening (or not)
        yield executor
    finally:
        executor.stop()
        await running


def picked_up_in(job: Job) -> datetime.timedelta:
    """From the job's scheduling to its claim."""
    job.refresh_from_db()
    assert job.started is not None
    return job.started - job.added


async def test_through_the_listen_alias_a_job_is_picked_up_in_under_100_ms_with_a_60_s_poll(
    direct: str,
) -> None:
    async with worker(poll_interval=60.0, listen=direct):
        job = await sync_to_async(schedule)(tasks.add, [1, 1])
        assert await aresult(job, timeout=10) == 2
    assert await sync_to_async(picked_up_in)(job) < datetime.timedelta(milliseconds=100)


async def test_without_listen_a_worker_polls_and_finds_a_job_within_its_poll_interval() -> None:
    store = open_store(queue_settings(listen=False), "w")
    assert store.listen() is None
    await store.close()
    async with worker(poll_interval=0.5, listen=False):
        job = await sync_to_async(schedule)(tasks.add, [2, 2])
        assert await aresult(job, timeout=10) == 4
    assert await sync_to_async(picked_up_in)(job) < datetime.timedelta(seconds=0.5 + 0.25)


def test_a_notify_reaches_a_listen_on_a_direct_connection() -> None:
    assert listen_works(connection)


def test_the_check_is_silent_where_listen_works_and_warns_where_it_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert checks.check_listen(databases=["default"]) == []
    assert checks.check_listen() == []  # without --database it touches no database
    # A pooler in transaction mode cannot be had here: the probe's verdict is given instead.
    monkeypatch.setattr("aio_async.store.drivers.psycopg.listen_works", lambda connection: False)
    [warning] = checks.check_listen(databases=["default"])
    assert warning.id == "aio_async.W005"
    assert "A NOTIFY did not reach a LISTEN on database 'default'" in warning.msg


def test_listen_takes_true_false_or_an_alias(direct: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from aio_async.conf import parse_settings

    assert parse_settings({"LISTEN": direct}).listen == direct
    assert parse_settings({"LISTEN": False}).listen is False
    with pytest.raises(ImproperlyConfigured, match="the alias of a direct connection in DATABASES"):
        parse_settings({"LISTEN": "pooled"})


async def test_claims_commit_durably_when_listen_is_set_apart_from_a_pooled_database(direct: str) -> None:
    async def synchronous_commit(listen: bool | str) -> str:
        store = open_store(queue_settings(listen=listen), "w")
        try:
            await store.claim(1, alone=True)  # opens the claim connection
            connection = store.connector._connection  # type: ignore[attr-defined]
            cursor = await connection.execute("SHOW synchronous_commit")
            return str((await cursor.fetchone())[0])
        finally:
            await store.close()

    assert await synchronous_commit(True) == "off"  # a direct connection of its own
    assert await synchronous_commit(direct) == "on"  # a pooler would keep the setting for all
    assert await synchronous_commit(False) == "on"


def _hold_row_then_release(
    job_id: int, locked: asyncio.Event, release: threading.Event, loop: asyncio.AbstractEventLoop
) -> None:
    """In a transaction of its own, lock a queued job's row until told, as a writer of that row would."""

    try:
        with transaction.atomic():
            Job.objects.select_for_update().get(pk=job_id)
            loop.call_soon_threadsafe(locked.set)
            while not release.is_set():
                import time

                time.sleep(0.01)
    finally:
        connection.close()


async def test_a_woken_worker_that_meets_the_jobs_row_locked_looks_again_soon_with_a_60_s_poll() -> None:
    # The worker's claim passes by rows another transaction holds (SKIP LOCKED); woken for a job
    # whose row was locked at that moment, it must look again soon, not at its next poll.
    job = await sync_to_async(schedule)(tasks.add, [1, 2])
    loop = asyncio.get_running_loop()
    locked = asyncio.Event()
    release = threading.Event()
    holder = loop.run_in_executor(None, _hold_row_then_release, job.pk, locked, release, loop)
    await locked.wait()
    async with worker(poll_interval=60.0) as executor:  # its first claims pass the locked row by
        assert (await Job.objects.aget(pk=job.pk)).started is None
        await sync_to_async(_notify_wake)()  # what a job's commit sends: "a job is due on default"
        await asyncio.sleep(0.2)  # the woken worker's claim meets the row still locked
        assert executor._claimed == 0
        release.set()
        await holder
        took = await until(lambda: Job.objects.get(pk=job.pk).started is not None, within=10)
    assert took < 2.0


def _notify_wake() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify('aio_async', 'default')")


async def test_a_job_then_one_after_it_each_in_its_own_transaction_start_at_once_with_a_60_s_poll() -> None:
    # The docs' pattern: schedule X; then, in a transaction of its own, Y after X. Y's
    # transaction locks X's row while the worker, woken by X's commit, claims.
    def pair(n: int) -> int:
        first = schedule(tasks.add, [n, 0])
        with transaction.atomic():
            return int(schedule(tasks.add, [n, 1], after=[first]).pk)

    def succeeded(job_id: int) -> bool:
        return Job.objects.filter(pk=job_id, status="succeeded").exists()

    async with worker(poll_interval=60.0):
        for n in range(20):
            second = await sync_to_async(pair)(n)
            await until(functools.partial(succeeded, second), within=5)
