"""The store's contract: every queue operation, on every connector, on both databases.

Each test runs on Django's connection (SQLite and PostgreSQL) and, on PostgreSQL, on the
worker's own asyncio connection too: the same statements, two ways of running them.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.utils import timezone

from aio_async import Snooze, allow, schedule
from aio_async.bridge import JobThread
from aio_async.models import Error, Group, Job, Status
from aio_async.store.database import DatabaseStore
from aio_async.store.drivers.django import DjangoConnector
from aio_async.values import Attempt, ClaimRequest, ErrorInfo, Outcome
from aio_async.worker.threads import JobThreads
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import PSYCOPG3, UNDECODABLE, queue_settings, write_raw_args

pytestmark = pytest.mark.django_db(transaction=True)

CONNECTORS = ["django", pytest.param("psycopg", marks=pytest.mark.postgres_only)] if PSYCOPG3 else ["django"]


def make_store(kind: str, worker: str = "w1", queues: tuple[str, ...] = ("default",)) -> DatabaseStore:
    settings = queue_settings(max_attempts=3)
    request = ClaimRequest(worker, queues, datetime.timedelta(seconds=30))
    if kind == "psycopg":
        from aio_async.store.drivers.psycopg import PsycopgConnector

        return DatabaseStore(
            settings, request, PsycopgConnector(connection), JobThreads(settings, request.worker_id, 2), 2
        )
    return DatabaseStore(
        settings, request, DjangoConnector("default"), JobThreads(settings, request.worker_id, 2), 2
    )


@pytest.fixture(params=CONNECTORS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[DatabaseStore]:
    made = make_store(request.param)
    yield made
    await made.close()


@pytest.fixture
async def other(request: pytest.FixtureRequest, store: DatabaseStore) -> AsyncIterator[DatabaseStore]:
    """A second worker's store, on the same kind of connector."""
    kind = "django" if isinstance(store.connector, DjangoConnector) else "psycopg"
    made = make_store(kind, worker="w2")
    yield made
    await made.close()


async def add(function: Any, args: list[Any], **options: Any) -> Job:
    return await sync_to_async(schedule)(function, args, **options)


async def row(job_id: int) -> Job:
    return await Job.objects.aget(pk=job_id)


async def test_claim_leases_due_jobs_of_its_queues_with_a_fresh_token(store: DatabaseStore) -> None:
    job = await add(tasks.write, ["x"])
    await add(tasks.write, ["later"], run_after=datetime.timedelta(hours=1))
    await add(tasks.write, ["elsewhere"], queue="other")
    before = timezone.now()
    [attempt] = await store.claim(10, alone=True)
    assert (attempt.job_id, attempt.number, attempt.name, attempt.args, attempt.kwargs) == (
        job.pk,
        1,
        "tests.app.tasks.write",
        ["x"],
        {},
    )
    stored = await row(job.pk)
    assert (stored.status, stored.attempts, stored.locked_by) == (Status.RUNNING, 1, "w1")
    assert stored.started is not None
    assert stored.started >= before - datetime.timedelta(seconds=1)
    assert stored.locked_until is not None
    assert stored.locked_until >= before + datetime.timedelta(seconds=29)
    assert await store.claim(10, alone=True) == []


async def test_claim_takes_at_most_its_limit_in_priority_order(store: DatabaseStore) -> None:
    for priority in (1, 2, 3, 4):
        await add(tasks.add, [priority, 0], priority=priority)
    assert [attempt.priority for attempt in await store.claim(3, alone=True)] == [4, 3, 2]
    assert [attempt.priority for attempt in await store.claim(3, alone=True)] == [1]


async def test_an_isolated_job_is_claimed_only_by_an_idle_worker_and_alone(store: DatabaseStore) -> None:
    first = await add(tasks.add, [1, 1], priority=9)
    isolated = await add(tasks.add, [2, 2], priority=5)
    last = await add(tasks.add, [3, 3], priority=1)
    await Job.objects.filter(pk=isolated.pk).aupdate(isolated=True)
    # A worker with a job running passes it by.
    assert [a.job_id for a in await store.claim(5, alone=False)] == [first.pk, last.pk]
    await Job.objects.filter(pk__in=[first.pk, last.pk]).aupdate(status=Status.QUEUED)
    # An idle worker whose batch would hold it takes it, and it alone.
    [attempt] = await store.claim(5, alone=True)
    assert (attempt.job_id, attempt.isolated) == (isolated.pk, True)
    assert await Job.objects.filter(status=Status.QUEUED).acount() == 2


async def test_a_row_whose_arguments_cannot_be_decoded_is_claimed_alone_with_its_problem(
    store: DatabaseStore,
) -> None:
    fine = await add(tasks.add, [1, 2])
    forged = await add(tasks.add, [1, 2])
    await sync_to_async(write_raw_args)(forged.pk, UNDECODABLE)
    attempts = {a.job_id: a for a in await store.claim(5, alone=True)}
    assert attempts[fine.pk].problem is None
    assert attempts[fine.pk].args == [1, 2]
    assert "cannot be decoded" in (attempts[forged.pk].problem or "")


async def test_a_forged_attempt_count_at_the_columns_limit_does_not_stop_claims(store: DatabaseStore) -> None:
    forged = await add(tasks.add, [1, 2])
    good = await add(tasks.add, [3, 4])
    await Job.objects.filter(pk=forged.pk).aupdate(attempts=2147483647)
    attempts = {a.job_id: a for a in await store.claim(5, alone=True)}
    assert set(attempts) == {forged.pk, good.pk}
    assert attempts[good.pk].number == 1
    with pytest.raises(Exception, match="no attempt is left"):
        allow.runnable(attempts[forged.pk])


async def test_complete_stores_results_and_releases_a_groups_final_job(store: DatabaseStore) -> None:
    group = await Group.objects.acreate(reference="g")
    member = await add(tasks.add, [1, 1], group=group)
    plain = await add(tasks.add, [2, 2])
    final = await add(tasks.write, ["final"], group=group)
    await sync_to_async(group.on_completion)(final)
    attempts = {a.job_id: a for a in await store.claim(5, alone=True)}
    assert set(attempts) == {member.pk, plain.pk}
    assert await store.complete(attempts[member.pk], {"n": [1, 2]}) == Outcome.SUCCEEDED
    assert await store.complete(attempts[plain.pk], None) == Outcome.SUCCEEDED
    done = await row(member.pk)
    assert (done.status, done.result, done.locked_until) == (Status.SUCCEEDED, {"n": [1, 2]}, None)
    assert done.finished is not None
    assert (await row(plain.pk)).result is None
    assert (await row(final.pk)).status == Status.QUEUED  # released in the member's transaction


async def test_fail_retries_with_back_off_then_gives_up_with_an_error_row_each_time(
    store: DatabaseStore,
) -> None:
    job = await add(tasks.add, [1, 1], max_attempts=2, priority=5)
    [attempt] = await store.claim(1, alone=True)
    error = ErrorInfo("ValueError", "boom", "Traceback ...")
    assert await store.fail(attempt, error) == Outcome.RETRYING
    retried = await row(job.pk)
    assert (retried.status, retried.priority, retried.locked_by) == (Status.QUEUED, 4, "")
    assert retried.run_after > timezone.now() + datetime.timedelta(seconds=30)  # 60 s × 1^1.6 ± 10 %
    await Job.objects.filter(pk=job.pk).aupdate(run_after=timezone.now())
    [again] = await store.claim(1, alone=True)
    assert again.number == 2
    assert await store.fail(again, error) == Outcome.FAILED
    failed = await row(job.pk)
    assert (failed.status, failed.attempts) == (Status.FAILED, 2)
    assert failed.finished is not None
    errors = [e async for e in Error.objects.filter(job_id=job.pk).order_by("attempt")]
    assert [(e.attempt, e.exception, e.message, e.worker) for e in errors] == [
        (1, "ValueError", "boom", "w1"),
        (2, "ValueError", "boom", "w1"),
    ]


async def test_a_final_failure_gives_up_at_once(store: DatabaseStore) -> None:
    job = await add(tasks.add, [1, 1], max_attempts=5)
    [attempt] = await store.claim(1, alone=True)
    assert await store.fail(attempt, ErrorInfo("x", "y", ""), final=True) == Outcome.FAILED
    assert (await row(job.pk)).status == Status.FAILED


async def test_a_retry_at_the_lowest_priority_does_not_overflow(store: DatabaseStore) -> None:
    job = await add(tasks.add, [1, 1], max_attempts=5)
    await Job.objects.filter(pk=job.pk).aupdate(priority=-2147483648)
    [attempt] = await store.claim(1, alone=True)
    assert await store.fail(attempt, ErrorInfo("x", "y", "")) == Outcome.RETRYING
    assert (await row(job.pk)).priority == -2147483648


async def test_release_requeues_with_the_attempt_excused(store: DatabaseStore) -> None:
    job = await add(tasks.add, [1, 1])
    [attempt] = await store.claim(1, alone=True)
    assert await store.release(attempt)
    released = await row(job.pk)
    assert (released.status, released.attempts, released.excused, released.locked_by) == (
        Status.QUEUED,
        1,
        1,
        "",
    )
    assert not await Error.objects.aexists()
    assert not await store.release(attempt)  # fenced: nothing to release twice


async def expire(*job_ids: int, locked_by: str | None = None) -> None:
    changes: dict[str, Any] = {"locked_until": timezone.now() - datetime.timedelta(seconds=1)}
    if locked_by is not None:
        changes["locked_by"] = locked_by
    await Job.objects.filter(pk__in=job_ids).aupdate(**changes)


async def test_rescue_charges_a_job_that_ran_alone(store: DatabaseStore, other: DatabaseStore) -> None:
    job = await add(tasks.add, [1, 1], max_attempts=2)
    await other.claim(1, alone=True)
    await expire(job.pk)
    assert await store.rescue() == [job.pk]
    rescued = await row(job.pk)
    assert (rescued.status, rescued.attempts, rescued.excused, rescued.isolated) == (
        Status.QUEUED,
        1,
        0,
        False,
    )
    assert rescued.run_after <= timezone.now()  # a lost worker is not a reason to wait
    error = await Error.objects.aget()
    assert (error.exception, error.worker, error.attempt) == ("aio_async.errors.WorkerLost", "w2", 1)
    assert "rescued by w1" in error.message
    assert "charged" in error.message
    # The second loss uses up the last attempt: failed, not looping forever.
    await other.claim(1, alone=True)
    await expire(job.pk)
    await store.rescue()
    assert (await row(job.pk)).status == Status.FAILED


async def test_rescue_excuses_and_isolates_jobs_that_shared_a_worker(
    store: DatabaseStore, other: DatabaseStore
) -> None:
    jobs = [await add(tasks.add, [n, n], max_attempts=1) for n in range(3)]
    await other.claim(3, alone=True)
    await expire(*(job.pk for job in jobs))
    assert sorted(await store.rescue()) == [job.pk for job in jobs]
    async for rescued in Job.objects.all():
        assert (rescued.status, rescued.attempts, rescued.excused, rescued.isolated) == (
            Status.QUEUED,
            1,
            1,
            True,
        )
    messages = [e.message async for e in Error.objects.all()]
    assert len(messages) == 3
    assert all("shared the worker with 2 other job(s)" in message for message in messages)
    # Isolated now, each runs alone; a job that is lost again alone is charged.
    [alone] = await other.claim(3, alone=True)
    assert alone.isolated
    await expire(alone.job_id)
    await store.rescue()
    assert (await row(alone.job_id)).status == Status.FAILED


async def test_rescue_leaves_live_leases_and_its_own_jobs_alone(
    store: DatabaseStore, other: DatabaseStore
) -> None:
    live = await add(tasks.add, [1, 1])
    mine = await add(tasks.add, [2, 2])
    await other.claim(1, alone=True)
    await store.claim(1, alone=True)
    await expire(mine.pk)  # this worker is alive: its heartbeat was late, nothing more
    assert await store.rescue() == []
    assert (await row(live.pk)).status == Status.RUNNING
    assert (await row(mine.pk)).status == Status.RUNNING


async def test_rescue_takes_a_running_job_that_has_no_lease(store: DatabaseStore) -> None:
    job = await add(tasks.add, [1, 1])
    await Job.objects.filter(pk=job.pk).aupdate(
        status=Status.RUNNING, attempts=1, locked_by="ghost", locked_until=None
    )
    assert await store.rescue() == [job.pk]
    assert (await row(job.pk)).status == Status.QUEUED


async def test_heartbeat_extends_only_this_workers_leases(store: DatabaseStore, other: DatabaseStore) -> None:
    await add(tasks.add, [1, 1])
    await add(tasks.add, [2, 2])
    [mine] = await store.claim(1, alone=True)
    [theirs] = await other.claim(1, alone=True)
    past = timezone.now() - datetime.timedelta(seconds=5)
    await Job.objects.aupdate(locked_until=past)
    assert await store.heartbeat([mine, theirs]) == {mine.job_id}
    renewed = (await row(mine.job_id)).locked_until
    assert renewed is not None
    assert renewed > timezone.now()
    assert (await row(theirs.job_id)).locked_until == past


async def test_a_sync_job_commits_its_work_with_its_completion_or_not_at_all(store: DatabaseStore) -> None:
    await add(tasks.write, ["kept"])
    [attempt] = await store.claim(1, alone=True)
    outcome, error = await _run_in_thread(attempt, lambda: tasks.write("kept"))
    assert (outcome, error) == (Outcome.SUCCEEDED, None)
    assert await Record.objects.filter(key="kept").aexists()
    assert (await row(attempt.job_id)).status == Status.SUCCEEDED


async def _run_in_thread(
    attempt: Attempt, call: Callable[[], Any], worker: str = "w1"
) -> tuple[Outcome, Any]:
    thread = JobThread("default", worker, queue_settings(max_attempts=3))
    return await sync_to_async(thread.run, thread_sensitive=True)(attempt, call)


# The fence: one contract over every writer ------------------------------------------------

STALE_CASES: dict[str, dict[str, Any]] = {
    # The lease expired, the job was rescued and this same worker claimed it again.
    "stale attempt, same worker": {"attempts": 2},
    # Another worker holds the job under the same attempt number (the counts were reset).
    "right attempt, another worker": {"locked_by": "w2"},
    # The job is no longer running (requeued by a rescue, cancelled by hand).
    "job no longer running": {"status": Status.QUEUED},
}

Writer = Callable[[DatabaseStore, Attempt], Awaitable[bool]]


async def _sync_completion(store: DatabaseStore, attempt: Attempt) -> bool:
    outcome, _ = await _run_in_thread(attempt, lambda: tasks.write("fenced"))
    return outcome == Outcome.SUCCEEDED


async def _sync_failure(store: DatabaseStore, attempt: Attempt) -> bool:
    outcome, _ = await _run_in_thread(attempt, lambda: tasks.write_then_fail("fenced"))
    return outcome != Outcome.LEASE_LOST


async def _coroutine_completion(store: DatabaseStore, attempt: Attempt) -> bool:
    return await store.complete(attempt, {"done": True}) == Outcome.SUCCEEDED


async def _failure(store: DatabaseStore, attempt: Attempt) -> bool:
    return await store.fail(attempt, ErrorInfo("ValueError", "late", "")) != Outcome.LEASE_LOST


async def _release(store: DatabaseStore, attempt: Attempt) -> bool:
    return await store.release(attempt)


async def _snooze(store: DatabaseStore, attempt: Attempt) -> bool:
    return await store.snooze(attempt, 0) == Outcome.SNOOZED


def _snooze_now() -> None:
    raise Snooze(0)


async def _sync_snooze(store: DatabaseStore, attempt: Attempt) -> bool:
    outcome, _ = await _run_in_thread(attempt, _snooze_now)
    return outcome == Outcome.SNOOZED


async def _heartbeat(store: DatabaseStore, attempt: Attempt) -> bool:
    return attempt.job_id in await store.heartbeat([attempt])


WRITERS: dict[str, Writer] = {
    "sync completion": _sync_completion,
    "sync failure": _sync_failure,
    "coroutine completion": _coroutine_completion,
    "failure": _failure,
    "release": _release,
    "snooze": _snooze,
    "sync snooze": _sync_snooze,
    "heartbeat": _heartbeat,
}


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("case", [None, *STALE_CASES])
async def test_the_fence(store: DatabaseStore, writer: str, case: str | None) -> None:
    """Every writer writes while its attempt holds the job, and writes nothing once it does not."""
    job = await add(tasks.write, ["fenced"], max_attempts=3)
    [attempt] = await store.claim(1, alone=True)
    held_until = (await row(job.pk)).locked_until
    assert held_until is not None
    stale: dict[str, Any] = STALE_CASES.get(case or "", {})
    await Job.objects.filter(pk=job.pk).aupdate(
        locked_until=held_until - datetime.timedelta(seconds=10), **stale
    )
    before = await row(job.pk)
    wrote = await WRITERS[writer](store, attempt)
    after = await row(job.pk)
    if case is None:
        assert wrote, "the attempt holds its job: the write must go through"
        changed = (after.status, after.locked_until, after.excused) != (
            before.status,
            before.locked_until,
            before.excused,
        )
        assert changed
        return
    assert not wrote
    assert (
        after.status,
        after.attempts,
        after.locked_by,
        after.locked_until,
        after.excused,
        after.result,
    ) == (
        before.status,
        before.attempts,
        before.locked_by,
        before.locked_until,
        before.excused,
        before.result,
    )
    assert not await Error.objects.aexists()
    assert not await Record.objects.aexists()  # a sync job's own work rolled back with it


async def test_rescue_counts_the_neighbours_another_rescuer_already_requeued(
    store: DatabaseStore, other: DatabaseStore
) -> None:
    # Two rescuers share a lost worker's jobs: by the time the second reads the expired rows,
    # the first has requeued all but one. That one shared its worker all the same.
    first, last = [await add(tasks.add, [n, n], max_attempts=1) for n in range(2)]
    await other.claim(2, alone=True)
    await expire(first.pk)  # only this one, for the first rescuer's read
    assert await store.rescue() == [first.pk]
    await expire(last.pk)
    assert await store.rescue() == [last.pk]
    rescued = await row(last.pk)
    assert (rescued.status, rescued.excused, rescued.isolated) == (Status.QUEUED, 1, True)
    error = await Error.objects.filter(job_id=last.pk).aget()
    assert "shared the worker with 1 other job(s)" in error.message
