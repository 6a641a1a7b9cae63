"""cancel(): queued jobs at once, running jobs on their worker, nothing they write afterwards commits."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction

from aio_async import InvalidOption, JobFailed, acancel, aresult, cancel, schedule
from aio_async.executor import Executor
from aio_async.models import Error, Group, Job, Status
from aio_async.store.drivers.django import psycopg3
from aio_async.values import Outcome
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import beside, drain, until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_queued_job_is_cancelled_at_once_with_an_error_row_saying_who() -> None:
    job = schedule(tasks.write, ["never"])
    other = schedule(tasks.write, ["kept"])
    assert cancel(job, by="alice") == 1
    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert job.finished is not None
    (error,) = job.errors.all()
    assert error.exception == "aio_async.errors.JobCancelled"
    assert error.message == "cancelled by alice before it ran"
    assert cancel(job.pk) == 0  # finished already: nothing to do, nothing written
    assert job.errors.count() == 1
    assert drain() == {Outcome.SUCCEEDED: 1}
    assert list(Record.objects.values_list("key", flat=True)) == ["kept"]
    assert Job.objects.get(pk=other.pk).status == Status.SUCCEEDED


def test_cancel_takes_ids_querysets_and_lists_and_says_who_by_default() -> None:
    jobs = [schedule(tasks.add, [n, n]) for n in range(4)]
    assert cancel([jobs[0], jobs[1].pk]) == 2
    assert cancel(Job.objects.filter(pk=jobs[2].pk)) == 1
    assert cancel(jobs[3].pk) == 1
    messages = set(Error.objects.values_list("message", flat=True))
    assert len(messages) == 1
    assert messages.pop().startswith("cancelled by cancel() in process ")


@pytest.mark.parametrize("bad", ["7", None, 1.5, True, [object()]])
def test_bad_input_is_refused_and_cancels_nothing(bad: object) -> None:
    job = schedule(tasks.add, [1, 1])
    with pytest.raises(InvalidOption, match=r"cancel\(\) takes jobs, job ids or a queryset"):
        cancel([job, bad] if not isinstance(bad, list) else [job, *bad])  # type: ignore[list-item]
    job.refresh_from_db()
    assert job.status == Status.QUEUED
    assert not Error.objects.exists()


def test_a_cancel_in_a_transaction_that_rolls_back_never_happened() -> None:
    job = schedule(tasks.write, ["runs"])
    with pytest.raises(RuntimeError), transaction.atomic():
        assert cancel(job) == 1
        raise RuntimeError("roll back")
    job.refresh_from_db()
    assert job.status == Status.QUEUED
    assert not Error.objects.exists()


def test_cancelling_the_last_unfinished_member_releases_the_groups_final_job() -> None:
    group = Group.objects.create(reference="g")
    member = schedule(tasks.add, [1, 1], group=group)
    final = schedule(tasks.add, [2, 2], group=group)
    group.on_completion(final)
    assert cancel(member) == 1
    final.refresh_from_db()
    assert final.status == Status.QUEUED


def cancelled_while_running(by: str) -> str:
    """The Error row's message for a job cancelled while it ran, true of either kind of job."""
    return (
        f"cancelled by {by} while it ran: a sync job's work rolls back; a coroutine job is "
        "stopped at its next await, and what it wrote until then stays committed"
    )


def worker() -> contextlib.AbstractAsyncContextManager[Executor]:
    """A worker beside the test that renews its leases every 10 s.

    Only the NOTIFY (PostgreSQL with psycopg 3, where it also polls once a minute only) or
    its once-a-second look for cancelled jobs (elsewhere) can tell it of a cancellation
    within the tests' two seconds.
    """
    listens = connection.vendor == "postgresql" and psycopg3()
    return beside(poll_interval=60.0 if listens else 0.05, lease_seconds=30.0)


async def test_a_running_coroutine_job_is_cancelled_on_its_worker_within_two_seconds() -> None:
    async with worker() as executor:
        job = await sync_to_async(schedule)(tasks.await_cancel, ["a"])
        await until(lambda: Record.objects.filter(key="a").exists())
        assert await acancel(job, by="bob") == 1
        took = await until(lambda: executor.outcomes[Outcome.CANCELLED] == 1)
        assert took < 2.0
        assert await Record.objects.filter(key="a-stopped").aexists()  # its task was cancelled
    await job.arefresh_from_db()
    assert job.status == Status.CANCELLED
    (error,) = [error async for error in job.errors.all()]
    assert error.message == cancelled_while_running("bob")
    assert (error.attempt, error.worker) == (1, executor.worker_id)
    assert dict(executor.outcomes) == {Outcome.CANCELLED: 1}
    with pytest.raises(JobFailed, match="cancelled by bob"):
        await aresult(job, timeout=1)


# On SQLite a sync job's transaction holds the database's one write lock (BEGIN IMMEDIATE) for
# as long as the job runs, so cancel() waits for the job to end: only coroutine jobs can be
# cancelled while they run there.
@pytest.mark.postgres_only
@pytest.mark.parametrize("write_first", [True, False])
async def test_a_running_sync_job_sees_cancel_requested_and_its_work_never_commits(
    tmp_path: Path, write_first: bool
) -> None:
    marker = tmp_path / "saw-cancel"
    async with worker() as executor:
        arguments = {"write_first": write_first}
        job = await sync_to_async(schedule)(tasks.write_until_cancelled, ["s", str(marker)], arguments)
        await until(lambda: Job.objects.get(pk=job.pk).status == Status.RUNNING)
        assert await acancel(job) == 1
        took = await until(marker.exists)
        assert took < 2.0
        await until(lambda: executor.outcomes[Outcome.CANCELLED] == 1)
    await job.arefresh_from_db()
    assert (job.status, job.result) == (Status.CANCELLED, None)  # its completion was refused
    assert not await Record.objects.aexists()  # and its writes rolled back
    assert dict(executor.outcomes) == {Outcome.CANCELLED: 1}


async def test_the_neighbours_of_a_cancelled_job_run_on() -> None:
    async with worker() as executor:
        doomed = await sync_to_async(schedule)(tasks.await_cancel, ["doomed"])
        await until(lambda: Record.objects.filter(key="doomed").exists())
        await acancel(doomed)
        await until(lambda: executor.outcomes[Outcome.CANCELLED] == 1)
        kept = await sync_to_async(schedule)(tasks.write, ["next"])
        assert await aresult(kept, timeout=10) is not None
    assert dict(executor.outcomes) == {Outcome.CANCELLED: 1, Outcome.SUCCEEDED: 1}


async def test_a_running_job_deleted_under_its_worker_is_stopped_and_said_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No NOTIFY tells of a deletion: the worker learns of it at its next lease renewal.
    async with beside(poll_interval=0.05, lease_seconds=3.0, heartbeat_interval=0.2) as executor:
        job = await sync_to_async(schedule)(tasks.await_cancel, ["deleted"])
        await until(lambda: Record.objects.filter(key="deleted").exists())
        await Job.objects.filter(pk=job.pk).adelete()
        await until(lambda: executor.outcomes[Outcome.LEASE_LOST] == 1)
    assert (
        f"Job {job.pk} (tests.app.tasks.await_cancel, attempt 1): it was deleted while it ran" in caplog.text
    )
    assert await Record.objects.filter(key="deleted-stopped").aexists()  # stopped on the loop, at once


def cancel_lines(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """The worker's job_cancelled and job_finished lines, by action."""
    return {
        record.action: record.getMessage()  # type: ignore[attr-defined]
        for record in caplog.records
        if getattr(record, "action", None) in ("job_cancelled", "job_finished")
    }


async def test_a_cancelled_coroutine_jobs_error_row_and_log_lines_say_its_writes_stay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="aio_async.jobs"):
        async with worker() as executor:
            job = await sync_to_async(schedule)(tasks.await_cancel, ["c"])
            await until(lambda: Record.objects.filter(key="c").exists())
            assert await acancel(job, by="carol") == 1
            await until(lambda: executor.outcomes[Outcome.CANCELLED] == 1)
    (error,) = [error async for error in Error.objects.filter(job_id=job.pk)]
    assert error.message == cancelled_while_running("carol")
    # What it wrote before the cancel, and at its next await after it, is committed.
    assert {record.key async for record in Record.objects.all()} == {"c", "c-stopped"}
    lines = cancel_lines(caplog)
    assert lines["job_cancelled"].endswith(
        "was cancelled while it ran; stopping it at its next await (what it wrote until then stays "
        "committed: a coroutine's queries autocommit)"
    )
    assert "nothing it wrote" not in lines["job_finished"]
    assert "a coroutine job's writes until its stop stay committed" in lines["job_finished"]


@pytest.mark.postgres_only
async def test_a_cancelled_sync_jobs_log_line_says_its_transaction_rolls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "saw-cancel"
    with caplog.at_level(logging.INFO, logger="aio_async.jobs"):
        async with worker() as executor:
            job = await sync_to_async(schedule)(tasks.write_until_cancelled, ["d", str(marker)])
            await until(lambda: Job.objects.get(pk=job.pk).status == Status.RUNNING)
            assert await acancel(job, by="dave") == 1
            await until(lambda: executor.outcomes[Outcome.CANCELLED] == 1)
    (error,) = [error async for error in Error.objects.filter(job_id=job.pk)]
    assert error.message == cancelled_while_running("dave")
    assert not await Record.objects.aexists()
    lines = cancel_lines(caplog)
    assert lines["job_cancelled"].endswith(
        "asking it to stop (current_job().cancel_requested): its transaction rolls back, so nothing "
        "it wrote is committed"
    )
    assert "a sync job's work rolled back" in lines["job_finished"]
