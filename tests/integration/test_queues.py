"""Pausing and resuming queues, and the workers as they record themselves."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction

from aio_async import InvalidOption, aresult, schedule
from aio_async.executor import Executor
from aio_async.models import Job, Queue, Status
from aio_async.queues import apause, aresume, overview, pause, paused, resume, workers
from aio_async.store.drivers.django import psycopg3
from tests.app import tasks
from tests.conftest import beside, until

pytestmark = pytest.mark.django_db(transaction=True)


def test_pause_and_resume_say_whether_they_changed_anything_and_who_did() -> None:
    assert paused() == set()
    assert resume("mail") is False  # never paused
    assert pause("mail", by="alice") is True
    assert pause("mail") is False
    row = Queue.objects.get(name="mail")
    assert (row.paused, row.changed_by) == (True, "alice")
    assert paused() == {"mail"}
    assert resume("mail", by="bob") is True
    assert resume("mail") is False
    assert Queue.objects.get(name="mail").changed_by == "bob"
    assert paused() == set()


def test_a_pause_in_a_transaction_that_rolls_back_never_happened() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        pause("mail")
        raise RuntimeError("roll back")
    assert paused() == set()


@pytest.mark.parametrize("bad", ["", None, 7, "x" * 300])
def test_a_bad_queue_name_is_refused(bad: object) -> None:
    with pytest.raises(InvalidOption, match="queue must be a non-empty string"):
        pause(bad)  # type: ignore[arg-type]
    assert not Queue.objects.exists()


def test_the_overview_counts_jobs_by_queue_and_status_and_says_which_are_paused() -> None:
    schedule(tasks.add, [1, 1], queue="mail")
    schedule(tasks.add, [1, 2], queue="mail")
    schedule(tasks.add, [1, 3])
    pause("reports")
    found = {queue["queue"]: queue for queue in overview()}
    assert set(found) == {"default", "mail", "reports"}
    assert found["mail"]["jobs"] == {"queued": 2}
    assert found["mail"]["due"] == 2
    assert found["mail"]["oldest_due_age_seconds"] >= 0
    assert (found["reports"]["paused"], found["reports"]["jobs"]) == (True, {})


def listens() -> bool:
    return connection.vendor == "postgresql" and psycopg3()


def worker(queues: tuple[str, ...] = ("default", "mail")) -> contextlib.AbstractAsyncContextManager[Executor]:
    """A worker beside the test: on PostgreSQL it polls once a minute (NOTIFY tells it of changes)."""
    return beside(poll_interval=60.0 if listens() else 0.2, queues=queues)


async def test_a_paused_queue_keeps_its_jobs_until_it_is_resumed() -> None:
    async with worker() as executor:
        await until(lambda: executor._claimed == 0 and bool(workers()))  # started, nothing to do
        assert await apause("mail") is True
        await asyncio.sleep(0.3)  # the workers hear of it (NOTIFY) or read it (a poll interval)
        held = await sync_to_async(schedule)(tasks.add, [2, 2], queue="mail")
        other = await sync_to_async(schedule)(tasks.add, [3, 3])
        assert await aresult(other, timeout=10) == 6  # the rest of the worker runs on
        await asyncio.sleep(1.0)
        assert (await Job.objects.aget(pk=held.pk)).status == Status.QUEUED
        assert await aresume("mail") is True
        took = await until(lambda: Job.objects.get(pk=held.pk).status == Status.SUCCEEDED)
        assert took < (1.0 if listens() else 2.0)


async def test_a_worker_serving_every_queue_leaves_a_paused_one_alone() -> None:
    await sync_to_async(pause)("mail")
    async with worker(queues=("*",)):
        held = await sync_to_async(schedule)(tasks.add, [2, 2], queue="mail")
        other = await sync_to_async(schedule)(tasks.add, [3, 3], queue="reports")
        assert await aresult(other, timeout=10) == 6
        await asyncio.sleep(0.5)
        assert (await Job.objects.aget(pk=held.pk)).status == Status.QUEUED


async def test_a_worker_records_itself_while_it_runs_and_forgets_itself_when_it_stops() -> None:
    async with worker() as executor:
        await until(lambda: bool(workers()))
        (found,) = await sync_to_async(workers)()
        assert found["id"] == executor.worker_id
        assert found["queues"] == ["default", "mail"]
        assert found["concurrency"] == executor.concurrency
    assert await sync_to_async(workers)() == []


def listener_pids() -> list[int]:
    """The backends LISTENing for the test database's workers (not their start-up probe's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN aio_async;%%'"
        )
        return [row[0] for row in cursor.fetchall()]


def terminate(pid: int) -> None:
    """End that backend, as a restart or a network cut would."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.postgres_only
@pytest.mark.psycopg3
async def test_a_pause_sent_while_the_worker_was_not_listening_is_read_once_it_listens_again() -> None:
    # The worker polls once a minute: only its own re-reading, once it listens again, can
    # tell it of a pause whose NOTIFY it missed.
    async with worker() as executor:
        await until(lambda: len(listener_pids()) == 1)
        (pid,) = await sync_to_async(listener_pids)()
        await sync_to_async(terminate)(pid)
        await until(lambda: not listener_pids())  # the worker waits a second before reconnecting
        assert await apause("mail") is True  # its NOTIFY reaches no worker
        await until(lambda: listener_pids() not in ([], [pid]))
        held = await sync_to_async(schedule)(tasks.add, [2, 2], queue="mail")
        other = await sync_to_async(schedule)(tasks.add, [3, 3])
        assert await aresult(other, timeout=10) == 6
        await asyncio.sleep(0.5)
        assert (await Job.objects.aget(pk=held.pk)).status == Status.QUEUED
        assert executor._paused == frozenset({"mail"})
