"""Where workers LISTEN: the queue's database, a direct connection beside a pooler, or nowhere."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Iterator

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections

from aio_async import aresult, checks, schedule
from aio_async.executor import Executor
from aio_async.models import Job
from aio_async.store.drivers.psycopg import listen_works
from aio_async.worker.threads import open_store
from tests.app import tasks
from tests.conftest import queue_settings

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
