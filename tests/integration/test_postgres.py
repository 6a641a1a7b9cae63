"""PostgreSQL only: the worker's own asyncio connection, SKIP LOCKED, and NOTIFY on commit."""

from __future__ import annotations

import asyncio
import datetime
import threading

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction

from aio_async import schedule
from aio_async.models import Job
from aio_async.store.database import DatabaseStore
from aio_async.store.drivers.psycopg import PsycopgConnector, connection_params
from tests.app import tasks
from tests.integration.test_store import make_store

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def terminate(pid: int) -> datetime.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s), clock_timestamp()", [pid])
        killed_at: datetime.datetime = cursor.fetchone()[1]
    return killed_at


def backends_since(moment: datetime.datetime) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_start > %s",
            [moment],
        )
        return int(cursor.fetchone()[0])


def backend_pid(store: DatabaseStore) -> int:
    assert isinstance(store.connector, PsycopgConnector)
    assert store.connector._connection is not None
    return store.connector._connection.info.backend_pid


async def test_a_completion_on_a_killed_connection_is_retried_on_a_new_one() -> None:
    await sync_to_async(schedule)(tasks.awrite, ["a"])
    store = make_store("psycopg")
    try:
        [attempt] = await store.claim(1, alone=True)
        pid = backend_pid(store)
        await sync_to_async(terminate)(pid)
        assert (await store.complete(attempt, 1)).value == "succeeded"  # fenced: safe to write twice
        assert backend_pid(store) != pid
    finally:
        await store.close()


async def test_operations_that_find_the_connection_dead_share_one_replacement() -> None:
    for key in ("a", "b", "c"):
        await sync_to_async(schedule)(tasks.awrite, [key])
    store = make_store("psycopg")
    try:
        attempts = await store.claim(3, alone=True)
        killed_at = await sync_to_async(terminate)(backend_pid(store))
        await asyncio.gather(*(store.heartbeat([attempt]) for attempt in attempts))
        assert await sync_to_async(backends_since)(killed_at) == 1
    finally:
        await store.close()


async def test_a_claim_on_a_killed_connection_fails_and_the_next_one_reconnects() -> None:
    await sync_to_async(schedule)(tasks.awrite, ["a"])
    store = make_store("psycopg", queues=("nothing",))
    try:
        assert await store.claim(1, alone=True) == []
        await sync_to_async(terminate)(backend_pid(store))
        with pytest.raises(psycopg.OperationalError):
            await store.claim(1, alone=True)  # a claim is not retried: it may have taken jobs
        assert await store.claim(1, alone=True) == []
    finally:
        await store.close()


def test_a_claim_skips_rows_another_connection_holds() -> None:
    first = schedule(tasks.add, [1, 1], priority=9)
    second = schedule(tasks.add, [2, 2], priority=1)
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with transaction.atomic():
            Job.objects.select_for_update().get(pk=first.pk)
            locked.set()
            release.wait(10)
        connection.close()

    async def claim() -> list[int]:
        store = make_store("psycopg")
        try:
            return [attempt.job_id for attempt in await store.claim(2, alone=True)]
        finally:
            await store.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        assert asyncio.run(claim()) == [second.pk]
    finally:
        release.set()
        holder.join()
    assert asyncio.run(claim()) == [first.pk]


def test_notify_is_sent_inside_the_scheduling_transaction_and_delivered_on_commit() -> None:
    with psycopg.connect(**connection_params(connection), autocommit=True) as listener:
        listener.execute("LISTEN aio_async")
        with transaction.atomic():
            schedule(tasks.add, [1, 1], queue="mail")
            assert list(listener.notifies(timeout=0.3)) == []
        [notice] = list(listener.notifies(timeout=2, stop_after=1))
        assert notice.payload == "mail"
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            schedule(tasks.add, [1, 1], queue="mail")
            1 / 0  # noqa: B018
        assert list(listener.notifies(timeout=0.5)) == []
        schedule(tasks.add, [1, 1], queue="later", run_after=datetime.timedelta(hours=1))
        assert list(listener.notifies(timeout=0.5)) == []  # not due: nothing to wake for

        # A job given back to the queue (a clean stop) wakes the other workers too.
        async def claim_and_release() -> None:
            store = make_store("psycopg", queues=("mail",))
            try:
                [attempt] = await store.claim(1, alone=True)
                assert list(listener.notifies(timeout=0.3)) == []
                assert await store.release(attempt)
            finally:
                await store.close()

        asyncio.run(claim_and_release())
        [again] = list(listener.notifies(timeout=2, stop_after=1))
        assert again.payload == "mail"


async def test_the_stores_wakeups_say_when_listening_began_then_name_queues() -> None:
    store = make_store("psycopg")
    wakeups = store.listen()
    assert wakeups is not None
    try:
        assert await anext(wakeups) == ("wake", "")  # listening now
        await sync_to_async(schedule)(tasks.add, [1, 1], queue="mail")
        assert await asyncio.wait_for(anext(wakeups), 5) == ("wake", "mail")
    finally:
        await wakeups.aclose()  # type: ignore[attr-defined]
        await store.close()
