"""The named queue operations: claim, fencing, heartbeat, rescue, release."""

from __future__ import annotations

import datetime
import threading

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone

from aio_async import schedule, store
from aio_async.bridge import Outcome, run_sync_job
from aio_async.conf import QueueSettings
from aio_async.dialects.postgresql import connection_params
from aio_async.models import Error, Job, Status
from tests.app import tasks
from tests.app.models import Record

pytestmark = pytest.mark.django_db(transaction=True)

SETTINGS = QueueSettings()


def claim(worker: str = "w1", limit: int = 10, **kwargs: object) -> list[Job]:
    return store.claim("default", worker=worker, queues=("default",), limit=limit, lease_seconds=30, **kwargs)  # type: ignore[arg-type]


def test_claim_leases_due_jobs_with_a_fresh_token() -> None:
    job = schedule(tasks.write, ["x"])
    schedule(tasks.write, ["later"], run_after=datetime.timedelta(hours=1))
    schedule(tasks.write, ["elsewhere"], queue="other")
    before = timezone.now()
    [claimed] = claim()
    assert claimed.pk == job.pk
    assert claimed.args == ["x"]
    assert claimed.status == Status.RUNNING
    assert claimed.attempts == 1
    assert claimed.locked_by == "w1"
    assert claimed.locked_until is not None
    assert claimed.locked_until >= before + datetime.timedelta(seconds=29)
    assert claim() == []


def test_claim_respects_the_limit_and_order() -> None:
    for priority in (1, 2, 3, 4):
        schedule(tasks.add, [priority, 0], priority=priority)
    first = claim(limit=3)
    assert [job.priority for job in first] == [4, 3, 2]
    assert [job.priority for job in claim(limit=3)] == [1]


def test_completion_with_a_stale_token_rolls_back_the_whole_job() -> None:
    schedule(tasks.write, ["split-brain"])
    [mine] = claim("w1")
    # The lease expired and another worker claimed the job again.
    Job.objects.filter(pk=mine.pk).update(attempts=2, locked_by="w2")
    outcome = run_sync_job(mine, tasks.write, ["split-brain"], {}, "w1", SETTINGS)
    assert outcome == Outcome.LEASE_LOST
    assert not Record.objects.exists()  # the job's own write rolled back with it
    job = Job.objects.get(pk=mine.pk)
    assert (job.status, job.attempts, job.locked_by) == (Status.RUNNING, 2, "w2")


def test_a_failure_with_a_stale_token_is_not_recorded() -> None:
    schedule(tasks.write_then_fail, ["f"])
    [mine] = claim("w1")
    Job.objects.filter(pk=mine.pk).update(attempts=2, locked_by="w2")
    outcome = run_sync_job(mine, tasks.write_then_fail, ["f"], {}, "w1", SETTINGS)
    assert outcome == Outcome.LEASE_LOST
    assert not Error.objects.exists()
    assert Job.objects.get(pk=mine.pk).status == Status.RUNNING


def test_heartbeat_extends_only_this_workers_leases() -> None:
    schedule(tasks.add, [1, 1])
    schedule(tasks.add, [2, 2])
    [mine] = claim("w1", limit=1)
    [theirs] = claim("w2", limit=1)
    past = timezone.now() - datetime.timedelta(seconds=5)
    Job.objects.update(locked_until=past)
    assert store.heartbeat("default", [mine.pk, theirs.pk], "w1", 30) == 1
    renewed = Job.objects.get(pk=mine.pk).locked_until
    assert renewed is not None
    assert renewed > timezone.now()
    assert Job.objects.get(pk=theirs.pk).locked_until == past


def test_rescue_requeues_expired_leases_and_counts_the_attempt() -> None:
    job = schedule(tasks.add, [1, 1], max_attempts=2)
    claim("dead-worker")
    Job.objects.update(locked_until=timezone.now() - datetime.timedelta(seconds=1))
    assert store.rescue("default", "rescuer", SETTINGS) == [job.pk]
    job.refresh_from_db()
    assert job.status == Status.QUEUED
    assert job.attempts == 1
    assert job.run_after <= timezone.now()  # a lost worker is not the job's fault: no back-off
    error = Error.objects.get()
    assert error.exception == "aio_async.WorkerLost"
    assert error.worker == "dead-worker"
    assert "rescued by rescuer" in error.message
    # The second loss uses up the last attempt: failed, not looping forever.
    Job.objects.update(run_after=timezone.now())
    claim("dead-again")
    Job.objects.update(locked_until=timezone.now() - datetime.timedelta(seconds=1))
    store.rescue("default", "rescuer", SETTINGS)
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert Error.objects.count() == 2


def test_rescue_leaves_live_leases_alone() -> None:
    schedule(tasks.add, [1, 1])
    claim("alive")
    assert store.rescue("default", "rescuer", SETTINGS) == []
    assert Job.objects.get().status == Status.RUNNING


def test_release_gives_the_attempt_back() -> None:
    schedule(tasks.add, [1, 1])
    [job] = claim("w1")
    assert store.release(job, "w1")
    job.refresh_from_db()
    assert (job.status, job.attempts, job.locked_by) == (Status.QUEUED, 0, "")
    assert not store.release(job, "w1")  # fenced: nothing to release twice


@pytest.mark.postgres_only
def test_claim_skips_rows_locked_by_another_connection() -> None:
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

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        assert [job.pk for job in claim(limit=2)] == [second.pk]
    finally:
        release.set()
        holder.join()
    assert [job.pk for job in claim(limit=2)] == [first.pk]


@pytest.mark.postgres_only
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
        [claimed] = store.claim("default", worker="w1", queues=("mail",), limit=1, lease_seconds=30)
        assert list(listener.notifies(timeout=0.3)) == []
        assert store.release(claimed, "w1")
        [again] = list(listener.notifies(timeout=2, stop_after=1))
        assert again.payload == "mail"
