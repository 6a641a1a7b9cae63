"""Every attempt kept: a record for each that ended without finishing its job, on both databases.

The job's row holds the last attempt; an attempt that put the job back in the queue (retried,
lost, timed out, snoozed, released) is recorded in the transaction that requeued it, and a
first attempt that succeeds writes nothing more than the job's row.
"""

from __future__ import annotations

import datetime
import importlib
from collections.abc import AsyncIterator, Callable

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from aio_async import cancel, retry, schedule
from aio_async.bridge import JobThread
from aio_async.conf import Backoff
from aio_async.models import AttemptRecord, Error, Job, Status
from aio_async.retention import Retention
from aio_async.store import operations
from aio_async.store.database import DatabaseStore
from aio_async.store.drivers.django import run
from aio_async.store.maintenance import prune
from aio_async.values import AttemptEnd, ClaimRequest, ErrorInfo, Outcome
from tests.app import tasks
from tests.conftest import drain, queue_settings
from tests.integration.test_store import CONNECTORS, add, expire, make_store, row

pytestmark = pytest.mark.django_db(transaction=True)

NO_BACKOFF = Backoff(base=0, jitter=0)


def history(job: Job) -> list[tuple[int, str]]:
    job.refresh_from_db()
    return [(record.number, record.outcome) for record in job.attempt_history()]


def test_a_job_that_fails_twice_then_succeeds_has_three_attempts() -> None:
    job = schedule(tasks.fail_until, [3], max_attempts=5)
    assert drain(backoff=NO_BACKOFF) == {Outcome.RETRYING: 2, Outcome.SUCCEEDED: 1}
    assert history(job) == [(1, "retried"), (2, "retried"), (3, "succeeded")]
    records = job.attempt_history()
    assert len({record.worker for record in records}) == 1
    assert records[0].worker == Error.objects.filter(job=job).first().worker  # type: ignore[union-attr]
    for record in records:
        assert record.due is not None
        assert record.started is not None
        assert record.ended is not None
        assert record.due <= record.started <= record.ended
        assert record.pickup_latency is not None
        assert record.pickup_latency >= 0
    assert records[0].ended <= records[1].started  # type: ignore[operator]
    assert records[2]._state.adding  # the job's row, not a record
    assert records[2].ended == job.finished
    assert AttemptRecord.objects.filter(job=job).count() == 2


def test_a_first_attempt_that_succeeds_writes_no_record() -> None:
    job = schedule(tasks.add, [1, 2])
    assert drain() == {Outcome.SUCCEEDED: 1}
    assert not AttemptRecord.objects.exists()
    assert history(job) == [(1, "succeeded")]


def test_a_job_not_started_has_no_attempts() -> None:
    job = schedule(tasks.add, [1, 2])
    assert job.attempt_history() == []


def test_a_snoozed_job_keeps_each_snooze() -> None:
    job = schedule(tasks.snooze_then_write, ["s", 2], max_attempts=1)
    assert drain() == {Outcome.SNOOZED: 2, Outcome.SUCCEEDED: 1}
    assert history(job) == [(1, "snoozed"), (2, "snoozed"), (3, "succeeded")]


def test_a_coroutine_job_that_snoozes_is_recorded_too() -> None:
    job = schedule(tasks.asnooze, [1], max_attempts=1)
    assert drain() == {Outcome.SNOOZED: 1, Outcome.SUCCEEDED: 1}
    assert history(job) == [(1, "snoozed"), (2, "succeeded")]


def test_a_job_stopped_at_its_timeout_reads_timed_out() -> None:
    job = schedule(tasks.aslow, [5], timeout=0.1, max_attempts=2)
    assert drain(backoff=NO_BACKOFF) == {Outcome.RETRYING: 1, Outcome.FAILED: 1}
    assert history(job) == [(1, "timed_out"), (2, "timed_out")]
    assert job.status == Status.FAILED


def test_a_job_that_fails_for_good_reads_failed_from_its_row() -> None:
    job = schedule(tasks.fail_until, [9], max_attempts=2)
    drain(backoff=NO_BACKOFF)
    assert history(job) == [(1, "retried"), (2, "failed")]
    assert AttemptRecord.objects.filter(job=job).count() == 1


def test_retrying_a_failed_job_keeps_its_failed_attempt() -> None:
    job = schedule(tasks.fail_until, [2], max_attempts=1)
    drain()
    job.refresh_from_db()
    failed_by = job.locked_by
    assert retry(job) == [job.pk]
    job.refresh_from_db()
    assert (job.status, job.locked_by) == (Status.QUEUED, "")
    assert history(job) == [(1, "failed")]
    assert drain() == {Outcome.SUCCEEDED: 1}
    assert history(job) == [(1, "failed"), (2, "succeeded")]
    assert job.attempt_history()[0].worker == failed_by


def test_a_job_cancelled_while_queued_after_a_retry_has_only_its_attempt() -> None:
    job = schedule(tasks.fail_until, [3], max_attempts=3)
    drain()  # the retry waits for its back-off
    assert cancel(job) == 1
    assert history(job) == [(1, "retried")]


def test_pruning_a_job_deletes_its_records() -> None:
    job = schedule(tasks.fail_until, [2], max_attempts=2)
    drain(backoff=NO_BACKOFF)
    assert AttemptRecord.objects.filter(job=job).exists()
    Job.objects.filter(pk=job.pk).update(finished=timezone.now() - datetime.timedelta(days=2))
    assert prune(Retention.parse({"SUCCEEDED": "1d"})) == {"succeeded": 1}
    assert not Job.objects.exists()
    assert not AttemptRecord.objects.exists()


def _writes_of_an_attempt(call: Callable[[], object]) -> tuple[Outcome, list[str]]:
    """Claim a job, run ``call`` as its attempt through the bridge; the statements that wrote."""
    request = ClaimRequest("w1", ("default",), datetime.timedelta(seconds=30))
    [attempt] = run(lambda dialect: operations.claim(dialect, request, 1, True, timezone.now()), "default")
    with CaptureQueriesContext(connection) as captured:
        outcome, _ = JobThread("default", "w1", queue_settings(max_attempts=3)).run(attempt, call)
    written = [
        query["sql"]
        for query in captured.captured_queries
        if query["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    return outcome, written


def test_a_success_writes_the_job_row_only() -> None:
    schedule(tasks.add, [1, 2])
    outcome, written = _writes_of_an_attempt(lambda: 3)
    assert outcome == Outcome.SUCCEEDED
    assert len(written) == 1
    assert written[0].lstrip().startswith('UPDATE "aio_async_job"')


def test_a_retry_records_its_attempt_beside_its_error() -> None:
    job = schedule(tasks.add, [1, 2], max_attempts=3)

    def boom() -> None:
        raise ValueError("boom")

    outcome, written = _writes_of_an_attempt(boom)
    assert outcome == Outcome.RETRYING
    assert [text.split("(")[0].split()[2] for text in written if text.startswith("INSERT")] == [
        '"aio_async_attempt"',
        '"aio_async_error"',
    ]
    assert list(AttemptRecord.objects.filter(job=job).values_list("outcome", "worker")) == [("retried", "w1")]


@pytest.fixture(params=CONNECTORS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[DatabaseStore]:
    made = make_store(request.param)
    yield made
    await made.close()


@pytest.fixture
async def other(request: pytest.FixtureRequest, store: DatabaseStore) -> AsyncIterator[DatabaseStore]:
    from aio_async.store.drivers.django import DjangoConnector

    made = make_store("django" if isinstance(store.connector, DjangoConnector) else "psycopg", worker="w2")
    yield made
    await made.close()


async def records(job_id: int) -> list[tuple[int, str, str]]:
    return [
        (record.number, record.outcome, record.worker)
        async for record in AttemptRecord.objects.filter(job_id=job_id).order_by("number")
    ]


async def test_a_release_is_recorded_with_its_worker_and_times(store: DatabaseStore) -> None:
    job = await add(tasks.add, [1, 1])
    [attempt] = await store.claim(1, alone=True)
    claimed = await row(job.pk)
    assert await store.release(attempt)
    [record] = [r async for r in AttemptRecord.objects.filter(job_id=job.pk)]
    assert (record.number, record.outcome, record.worker) == (1, "released", "w1")
    assert (record.due, record.started) == (claimed.run_after, claimed.started)
    assert record.ended is not None
    assert record.started is not None
    assert record.ended >= record.started
    assert not await store.release(attempt)  # fenced: no second record
    assert await records(job.pk) == [(1, "released", "w1")]


async def test_a_snooze_through_the_store_is_recorded(store: DatabaseStore) -> None:
    job = await add(tasks.add, [1, 1])
    [attempt] = await store.claim(1, alone=True)
    assert await store.snooze(attempt, 30) == Outcome.SNOOZED
    assert await records(job.pk) == [(1, "snoozed", "w1")]
    assert await store.snooze(attempt, 30) == Outcome.LEASE_LOST
    assert await records(job.pk) == [(1, "snoozed", "w1")]


async def test_a_failure_of_a_taken_over_attempt_records_nothing(
    store: DatabaseStore, other: DatabaseStore
) -> None:
    job = await add(tasks.add, [1, 1], max_attempts=3)
    [attempt] = await store.claim(1, alone=True)
    await expire(job.pk)
    assert await other.rescue() == [job.pk]
    [again] = await other.claim(1, alone=True)
    assert again.number == 2
    assert await store.fail(attempt, ErrorInfo("ValueError", "late", "")) == Outcome.LEASE_LOST
    assert await records(job.pk) == [(1, "lost", "w1")]


async def test_a_rescued_attempt_is_recorded_as_lost_under_its_worker(
    store: DatabaseStore, other: DatabaseStore
) -> None:
    job = await add(tasks.add, [1, 1], max_attempts=3)
    await other.claim(1, alone=True)
    await expire(job.pk)
    assert await store.rescue() == [job.pk]
    assert await records(job.pk) == [(1, "lost", "w2")]
    [attempt] = await store.claim(1, alone=True)
    assert await store.complete(attempt, 2) == Outcome.SUCCEEDED
    done = await row(job.pk)
    history = await sync_to_async(done.attempt_history)()
    assert [(r.number, r.outcome, r.worker) for r in history] == [(1, "lost", "w2"), (2, "succeeded", "w1")]


async def test_a_lost_last_attempt_reads_lost(store: DatabaseStore, other: DatabaseStore) -> None:
    job = await add(tasks.add, [1, 1], max_attempts=1)
    await other.claim(1, alone=True)
    await expire(job.pk)
    assert await store.rescue() == [job.pk]
    failed = await row(job.pk)
    assert failed.status == Status.FAILED
    history = await sync_to_async(failed.attempt_history)()
    assert [(r.number, r.outcome, r.worker) for r in history] == [(1, AttemptEnd.LOST, "w2")]


def test_migration_0013_records_the_attempts_that_older_error_rows_stand_for() -> None:
    migration = importlib.import_module("aio_async.migrations.0013_attempt_history")

    def job_with(status: str, attempts: int, *errors: tuple[int, str, str, str]) -> Job:
        made = schedule(tasks.add, [1, 2])
        # A requeue clears locked_by: a job cancelled while queued no longer names a worker.
        last = "" if status in ("queued", "cancelled") else "last"
        Job.objects.filter(pk=made.pk).update(status=status, attempts=attempts, locked_by=last)
        for attempt, kind, message, worker in errors:
            Error.objects.create(job=made, attempt=attempt, exception=kind, message=message, worker=worker)
        return made

    lost = "aio_async.errors.WorkerLost"
    cancelled = "aio_async.errors.JobCancelled"
    timed_out = "the job ran past its timeout of 1 s"
    succeeded = job_with("succeeded", 3, (1, "ValueError", "boom", "w1"), (2, lost, "w2 stopped", "w2"))
    failed = job_with("failed", 2, (1, "TimeoutError", timed_out, "w1"), (2, "ValueError", "", "w2"))
    queued = job_with("queued", 1, (1, "ValueError", "boom", "w1"))
    dropped = job_with(
        "cancelled", 1, (1, "ValueError", "boom", "w1"), (1, cancelled, "cancelled by ops before it ran", "")
    )
    stopped = job_with("failed", 2, (1, cancelled, "cancelled by ops while it ran: ...", "w1"))
    with connection.cursor() as cursor:
        cursor.execute(migration.RECORD_PAST)
    found = {
        job_id: [(number, outcome, worker) for job_id_, number, outcome, worker in rows if job_id_ == job_id]
        for job_id, rows in [
            (j.pk, list(AttemptRecord.objects.values_list("job_id", "number", "outcome", "worker")))
            for j in (succeeded, failed, queued, dropped, stopped)
        ]
    }
    assert found == {
        succeeded.pk: [(1, "retried", "w1"), (2, "lost", "w2")],
        failed.pk: [(1, "timed_out", "w1")],
        queued.pk: [(1, "retried", "w1")],
        dropped.pk: [(1, "retried", "w1")],
        stopped.pk: [(1, "cancelled", "w1")],
    }
    assert not AttemptRecord.objects.exclude(started=None).exists()  # never kept: left unknown
    assert history(succeeded) == [(1, "retried"), (2, "lost"), (3, "succeeded")]
