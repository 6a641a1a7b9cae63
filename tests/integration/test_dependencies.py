"""after=: a job waits until the jobs it runs after have succeeded, and is cancelled if one cannot."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection

from aio_async import InvalidOption, aresult, cancel, schedule, schedule_many
from aio_async.executor import Executor
from aio_async.models import Dependency, Error, Group, Job, Status
from aio_async.store import statements as sql
from aio_async.store.dialects import POSTGRESQL
from aio_async.values import Outcome
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import beside, drain
from tests.integration.test_store import CONNECTORS, make_store

pytestmark = pytest.mark.django_db(transaction=True)


def statuses(*jobs: Job) -> list[str]:
    """The jobs' statuses as the database has them now."""
    found = dict(Job.objects.filter(pk__in=[job.pk for job in jobs]).values_list("pk", "status"))
    return [found[job.pk] for job in jobs]


def test_a_diamond_runs_in_order() -> None:
    a = schedule(tasks.write, ["a"])
    b = schedule(tasks.write, ["b"], after=a)
    c = schedule(tasks.write, ["c"], after=[a.pk])
    d = schedule(tasks.write, ["d"], after=[b, c], priority=100)  # its priority cannot jump the queue
    assert (b.status, c.status, d.status) == (Status.WAITING,) * 3
    assert drain() == {Outcome.SUCCEEDED: 4}
    keys = list(Record.objects.order_by("id").values_list("key", flat=True))
    assert (keys[0], set(keys[1:3]), keys[3]) == ("a", {"b", "c"}, "d")
    # Record ids are given as each job writes, inside its transaction: D wrote after B and C.
    assert statuses(a, b, c, d) == ["succeeded"] * 4


def test_a_failure_cancels_everything_after_it_naming_the_cause() -> None:
    a = schedule(tasks.write_then_fail, ["a"], max_attempts=1)
    b = schedule(tasks.write, ["b"], after=a)
    c = schedule(tasks.write, ["c"], after=a)
    d = schedule(tasks.write, ["d"], after=[b, c])
    other = schedule(tasks.write, ["other"])
    assert drain() == {Outcome.FAILED: 1, Outcome.SUCCEEDED: 1}
    assert statuses(a, b, c, d, other) == ["failed", "cancelled", "cancelled", "cancelled", "succeeded"]
    for job in (b, c):
        (error,) = Error.objects.filter(job=job)
        assert error.exception == "aio_async.errors.JobCancelled"
        assert error.message == (
            f"cancelled because job {a.pk} (tests.app.tasks.write_then_fail), which it runs after, "
            "failed for good"
        )
    (error,) = Error.objects.filter(job=d)
    assert (
        error.message
        == f"cancelled because job {b.pk} (tests.app.tasks.write), which it runs after, was cancelled"
    )
    assert list(Record.objects.values_list("key", flat=True)) == ["other"]


def test_cancelling_a_job_cancels_what_runs_after_it() -> None:
    a = schedule(tasks.write, ["a"])
    b = schedule(tasks.write, ["b"], after=a)
    c = schedule(tasks.write, ["c"], after=b)
    assert cancel(a, by="carol") == 1
    assert statuses(a, b, c) == ["cancelled"] * 3
    assert drain() == {}


def test_after_finished_jobs_the_job_is_settled_at_once() -> None:
    done = schedule(tasks.write, ["done"])
    failed = schedule(tasks.write_then_fail, ["failed"], max_attempts=1)
    drain()
    queued = schedule(tasks.write, ["queued"], after=done)
    assert queued.status == Status.QUEUED
    doomed = schedule(tasks.write, ["doomed"], after=[done, failed])
    assert doomed.status == Status.CANCELLED
    assert Error.objects.get(job=doomed).message.startswith(f"cancelled because job {failed.pk} ")
    assert drain() == {Outcome.SUCCEEDED: 1}
    assert statuses(queued, doomed) == ["succeeded", "cancelled"]


@pytest.mark.parametrize(
    ("after", "message"),
    [
        ("7", "after= takes saved jobs or job ids, got '7'"),
        ([None], "after= takes saved jobs or job ids, got None"),
        ([True], "after= takes saved jobs or job ids, got True"),
        ([Job()], "after= takes saved jobs or job ids"),
        (1.5, "after= takes a job, a job id or a list of them, got 1.5"),
        ([987654], "after=: no job 987654 in database 'default'"),
    ],
)
def test_bad_after_is_refused_and_writes_nothing(after: object, message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        schedule(tasks.write, ["x"], after=after)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match=message):
        schedule_many(tasks.write, [(["x"], {})], after=after)  # type: ignore[arg-type]
    assert not Job.objects.exists()
    assert not Dependency.objects.exists()


def test_after_and_unique_do_not_mix() -> None:
    a = schedule(tasks.write, ["a"])
    with pytest.raises(InvalidOption, match="after= cannot be combined with a unique job"):
        schedule(tasks.write, ["b"], after=a, unique=True)
    assert Job.objects.count() == 1


def test_schedule_many_after_a_batch() -> None:
    firsts = schedule_many(tasks.write, [([f"first-{n}"], {}) for n in range(3)])
    thens = schedule_many(tasks.write, [([f"then-{n}"], {}) for n in range(5)], after=firsts)
    assert {job.status for job in thens} == {Status.WAITING}
    assert Dependency.objects.count() == 15
    assert drain() == {Outcome.SUCCEEDED: 8}
    keys = list(Record.objects.order_by("id").values_list("key", flat=True))
    assert all(key.startswith("first") for key in keys[:3])


def test_a_group_member_may_wait_for_another_job_and_the_final_waits_for_it() -> None:
    before = schedule(tasks.write, ["before"])
    group = Group.objects.create(reference="g")
    waiting_member = schedule(tasks.write, ["member-after"], group=group, after=before)
    schedule(tasks.write, ["member"], group=group)
    final = schedule(tasks.write, ["final"], group=group)
    group.on_completion(final)
    assert drain() == {Outcome.SUCCEEDED: 4}
    keys = list(Record.objects.order_by("id").values_list("key", flat=True))
    assert keys[-1] == "final"
    assert keys.index("before") < keys.index("member-after")
    group2 = Group.objects.create(reference="g2")
    second = schedule(tasks.write, ["x"], group=group2, after=waiting_member)
    with pytest.raises(InvalidOption, match="cannot be a group's final job too"):
        group2.on_completion(second)


def worker() -> contextlib.AbstractAsyncContextManager[Executor]:
    """A worker running beside the test."""
    return beside(poll_interval=0.05)


async def test_a_job_added_after_a_running_job_is_released_when_it_finishes() -> None:
    async with worker():
        first = await sync_to_async(schedule)(tasks.asleep, [0.5])
        while (await Job.objects.aget(pk=first.pk)).status != Status.RUNNING:
            await asyncio.sleep(0.01)
        # Claimed before it had dependents: its completion learns of them as it is written.
        then = await sync_to_async(schedule)(tasks.write, ["then"], after=first)
        assert then.status == Status.WAITING
        assert await aresult(then, timeout=10) is not None
    assert (await Job.objects.aget(pk=first.pk)).status == Status.SUCCEEDED


@pytest.mark.parametrize("kind", CONNECTORS)
def test_a_waiting_job_left_unsettled_by_a_lost_worker_is_settled_by_the_rescue(kind: str) -> None:
    done = schedule(tasks.write, ["done"])
    failed = schedule(tasks.write, ["failed"])
    ready = schedule(tasks.write, ["ready"], after=done)
    doomed = schedule(tasks.write, ["doomed"], after=failed)
    # The prerequisites finish by writes that did not settle their dependents (the worker died
    # between its completion's commit and the next statement).
    Job.objects.filter(pk=done.pk).update(status=Status.SUCCEEDED)
    Job.objects.filter(pk=failed.pk).update(status=Status.FAILED)
    rescue_pass(kind)
    assert statuses(ready, doomed) == ["queued", "cancelled"]


def rescue_pass(kind: str) -> None:
    """One rescue pass of a worker's store of ``kind``."""
    store = make_store(kind)

    async def rescue() -> None:
        try:
            await store.rescue()
        finally:
            await store.close()

    async_to_sync(rescue)()


@pytest.mark.parametrize("kind", CONNECTORS)
def test_deleting_a_job_before_it_succeeded_cancels_what_runs_after_it(kind: str) -> None:
    deleted = schedule(tasks.write, ["deleted"])
    slow = schedule(tasks.write, ["slow"])
    after_both = schedule(tasks.write, ["after both"], after=[deleted, slow])
    after_that = schedule(tasks.write, ["after that"], after=after_both)
    Job.objects.filter(pk=deleted.pk).delete()  # as the admin's delete does
    (orphaned,) = Dependency.objects.filter(job=after_both, after=None)
    assert str(orphaned) == f"job {after_both.pk} after a deleted job"
    rescue_pass(kind)
    # Cancelled at once, though ``slow`` has not run yet; and so is what runs after it.
    assert statuses(slow, after_both, after_that) == ["queued", "cancelled", "cancelled"]
    assert Error.objects.get(job=after_both).message == (
        "cancelled because a job it runs after was deleted before it succeeded"
    )
    assert Error.objects.get(job=after_that).message.startswith(f"cancelled because job {after_both.pk} ")
    assert drain() == {Outcome.SUCCEEDED: 1}


@pytest.mark.parametrize("kind", CONNECTORS)
def test_deleting_a_job_that_succeeded_forgets_it(kind: str) -> None:
    done = schedule(tasks.write, ["done"])
    drain()
    later = schedule(tasks.write, ["later"])
    waiting = schedule(tasks.write, ["waiting"], after=[done, later])
    Job.objects.filter(pk=done.pk).delete()
    assert list(Dependency.objects.filter(job=waiting).values_list("after_id", flat=True)) == [later.pk]
    rescue_pass(kind)
    assert statuses(waiting) == ["waiting"]
    assert drain() == {Outcome.SUCCEEDED: 2}
    assert statuses(later, waiting) == ["succeeded", "succeeded"]


@pytest.mark.parametrize("kind", CONNECTORS)
def test_a_final_job_whose_members_or_group_were_deleted_is_released_by_the_rescue(kind: str) -> None:
    group = Group.objects.create(reference="members deleted")
    member = schedule(tasks.write, ["member"], group=group)
    final = schedule(tasks.write, ["final"], group=group)
    group.on_completion(final)
    other = Group.objects.create(reference="deleted")
    schedule(tasks.write, ["other member"], group=other)
    other_final = schedule(tasks.write, ["other final"], group=other)
    other.on_completion(other_final)
    kept = Group.objects.create(reference="kept")
    kept_member = schedule(tasks.write, ["kept member"], group=kept)
    kept_final = schedule(tasks.write, ["kept final"], group=kept)
    kept.on_completion(kept_final)
    Job.objects.filter(pk=member.pk).delete()
    Job.objects.filter(group=other).exclude(pk=other_final.pk).delete()
    other.delete()
    assert statuses(final, other_final, kept_final) == ["waiting"] * 3
    rescue_pass(kind)
    assert statuses(final, other_final, kept_final, kept_member) == ["queued", "queued", "waiting", "queued"]


@pytest.mark.postgres_only
def test_the_claim_and_the_wait_stay_cheap() -> None:
    """The rescue's look for unsettled jobs reads the waiting jobs' index, not the table."""
    schedule_many(tasks.write, [([str(n)], {}) for n in range(200)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE aio_async_job")
        cursor.execute("EXPLAIN " + sql.unsettled(POSTGRESQL).replace("%s", "100"))
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "aio_async_job_waiting" in plan, plan
