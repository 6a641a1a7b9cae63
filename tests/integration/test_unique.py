"""Unique jobs: one job per key, enforced by a unique index, in the caller's transaction.

Each rule runs on both databases; the races (50 threads, a transaction left open) run on
PostgreSQL, whose writers really run at once.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from aio_async import InvalidOption, schedule, schedule_many, task
from aio_async.api import deschedule
from aio_async.models import Job, Status
from aio_async.store.database import DatabaseStore
from aio_async.values import ErrorInfo, Outcome
from tests.app import tasks
from tests.integration.test_store import CONNECTORS, make_store

pytestmark = pytest.mark.django_db(transaction=True)


def unique_add(*args: Any, **options: Any) -> Job:
    return schedule(tasks.add, list(args), **{"unique": True, **options})


def test_a_second_call_gets_the_first_job_and_writes_nothing() -> None:
    first = unique_add(1, 2)
    second = unique_add(1, 2)
    assert second.pk == first.pk
    assert (first.unique_conflict, second.unique_conflict) == (False, True)
    assert second.status == Status.QUEUED
    assert second.args == [1, 2]
    assert Job.objects.count() == 1
    assert unique_add(1, 3).pk != first.pk  # other arguments, another call
    assert schedule(tasks.add, [1, 2]).pk != first.pk  # a call that is not unique is not held back
    assert Job.objects.count() == 3


def test_a_key_makes_calls_with_other_arguments_one_job_per_task() -> None:
    first = schedule(tasks.add, [1, 2], unique_key="sum")
    assert schedule(tasks.add, [5, 5], unique_key="sum").pk == first.pk
    assert schedule(tasks.write, ["x"], unique_key="sum").pk != first.pk  # keys are per task
    assert Job.objects.get(pk=first.pk).args == [1, 2]


def test_a_rolled_back_duplicate_does_not_hold_the_key() -> None:
    with transaction.atomic():
        unique_add(1, 2)
        transaction.set_rollback(True)
    job = unique_add(1, 2)
    assert not job.unique_conflict
    assert Job.objects.count() == 1


def test_within_a_transaction_the_second_call_sees_the_first() -> None:
    with transaction.atomic():
        first = unique_add(1, 2)
        assert unique_add(1, 2).pk == first.pk
    assert Job.objects.count() == 1


def test_a_cancelled_job_frees_its_key() -> None:
    first = unique_add(1, 2)
    assert deschedule(tasks.add, [1, 2]) == 1
    second = unique_add(1, 2)
    assert second.pk != first.pk
    assert not second.unique_conflict
    assert Job.objects.get(pk=first.pk).unique_key is None


def test_after_its_period_a_job_no_longer_counts() -> None:
    first = unique_add(1, 2, unique_for=datetime.timedelta(minutes=5))
    assert unique_add(1, 2, unique_for=300).pk == first.pk
    Job.objects.filter(pk=first.pk).update(added=timezone.now() - datetime.timedelta(minutes=5, seconds=1))
    second = unique_add(1, 2, unique_for=300)
    assert second.pk != first.pk
    assert Job.objects.filter(status=Status.QUEUED).count() == 2  # the first still runs, once


def test_the_period_is_the_calls_a_later_call_without_one_keeps_the_job_as_its_holder() -> None:
    first = unique_add(1, 2, unique_for=datetime.timedelta(minutes=5))
    Job.objects.filter(pk=first.pk).update(added=timezone.now() - datetime.timedelta(hours=1))
    # No period in this call: the job holds its key for as long as its state counts.
    held = unique_add(1, 2)
    assert (held.pk, held.unique_conflict) == (first.pk, True)
    # A call with a period frees keys older than that period, then writes its own job.
    assert unique_add(1, 2, unique_for=60).pk != first.pk


def test_replace_gives_the_waiting_job_the_last_calls_arguments_and_time() -> None:
    now = timezone.now()
    jobs = [
        schedule(
            tasks.add,
            [index, index],
            unique_key="debounced",
            on_conflict="replace",
            run_after=now + datetime.timedelta(seconds=10 + index),
            priority=index,
        )
        for index in range(5)
    ]
    assert len({job.pk for job in jobs}) == 1
    assert [job.unique_conflict for job in jobs] == [False, True, True, True, True]
    stored = Job.objects.get()
    assert (stored.args, stored.priority) == ([4, 4], 4)
    assert stored.run_after == now + datetime.timedelta(seconds=14)
    assert jobs[-1].args == [4, 4]  # what the call returns is the row as it now is


def test_schedule_many_writes_one_job_per_key_and_returns_the_holders() -> None:
    existing = unique_add(1, 1)
    jobs = schedule_many(
        tasks.add, [((1, 1), None), ((2, 2), None), ((2, 2), None), ((3, 3), None)], unique=True
    )
    assert jobs[0].pk == existing.pk
    assert jobs[0].unique_conflict
    assert jobs[1].pk == jobs[2].pk
    assert len({job.pk for job in jobs}) == 3
    assert Job.objects.count() == 3


@task(unique=True, unique_for=60)
def ping(n: int) -> None:
    """A unique task (a worker finds it as the test allows this module)."""


def test_task_options_make_every_call_unique_and_a_call_may_opt_out() -> None:
    with override_settings(AIO_ASYNC={**settings.AIO_ASYNC, "ALLOWED_MODULES": ["tests.app", __name__]}):
        first = ping.schedule([1])
        assert ping.schedule([1]).pk == first.pk
        assert ping.schedule([1], unique=False).pk != first.pk
    assert Job.objects.get(pk=first.pk).unique_states == "queued,waiting"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique": True, "unique_for": -1}, "unique_for must be a positive timedelta"),
        ({"unique": True, "unique_for": "1h"}, "unique_for must be a positive timedelta"),
        ({"unique": "yes"}, "unique must be True or False"),
        ({"unique_key": ""}, "unique_key must be a non-empty string"),
        ({"unique": False, "unique_key": "k"}, "unique=False contradicts unique_key"),
        ({"unique": True, "unique_states": "queued"}, "unique_states must be a list of states"),
        ({"unique": True, "unique_states": ["queued", "done"]}, "'done' is not a state"),
        ({"unique": True, "unique_states": ["running"]}, "must include 'queued'"),
        ({"unique": True, "unique_states": ["queued", "succeeded"]}, "must include 'running'"),
        ({"unique": True, "on_conflict": "ignore"}, "on_conflict must be one of"),
        ({"unique_for": 60}, "unique_for applies to unique jobs only"),
        ({"on_conflict": "replace", "unique_states": ["queued"]}, "unique_states and on_conflict apply"),
    ],
)
def test_bad_unique_options_are_refused_and_write_nothing(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        schedule(tasks.add, [1, 2], **options)
    assert not Job.objects.exists()


# What the worker's writes do with the key ---------------------------------------------


@pytest.fixture(params=CONNECTORS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[DatabaseStore]:
    made = make_store(request.param)
    yield made
    await made.close()


async def key_of(job: Job) -> str | None:
    return (await Job.objects.aget(pk=job.pk)).unique_key


aunique_add = sync_to_async(unique_add)


async def test_a_started_job_frees_its_key_unless_running_counts(store: DatabaseStore) -> None:
    plain = await aunique_add(1, 2)
    held = await aunique_add(3, 4, unique_states=["queued", "running"])
    await store.claim(5, alone=True)
    assert await key_of(plain) is None
    assert await key_of(held) is not None
    assert (await aunique_add(1, 2)).pk != plain.pk
    assert (await aunique_add(3, 4, unique_states=["queued", "running"])).pk == held.pk


async def test_a_finished_job_frees_its_key_unless_its_state_counts(store: DatabaseStore) -> None:
    states = ["queued", "running", "succeeded"]
    done = await aunique_add(1, 2, unique_states=states)
    failed = await aunique_add(3, 4, unique_states=states)
    attempts = {attempt.job_id: attempt for attempt in await store.claim(5, alone=True)}
    assert await store.complete(attempts[done.pk], 3) == Outcome.SUCCEEDED
    assert await store.fail(attempts[failed.pk], ErrorInfo("x", "y", ""), final=True) == Outcome.FAILED
    assert await key_of(done) is not None  # a success counts: the call is not made again
    assert await key_of(failed) is None  # a failure does not: it may be scheduled again
    assert (await aunique_add(1, 2, unique_states=states)).pk == done.pk
    assert (await aunique_add(3, 4, unique_states=states)).pk != failed.pk


async def test_a_retried_job_keeps_its_key_while_running_counts(store: DatabaseStore) -> None:
    job = await aunique_add(1, 2, unique_states=["queued", "running"], max_attempts=3)
    [attempt] = await store.claim(1, alone=True)
    assert await store.fail(attempt, ErrorInfo("x", "y", "")) == Outcome.RETRYING
    assert await key_of(job) is not None
    assert (await aunique_add(1, 2, unique_states=["queued", "running"])).pk == job.pk


def test_replace_leaves_a_started_job_alone() -> None:
    job = schedule(tasks.add, [1, 1], unique_key="k", unique_states=["queued", "running"])
    Job.objects.filter(pk=job.pk).update(status=Status.RUNNING)  # as a claim leaves it
    again = schedule(
        tasks.add, [9, 9], unique_key="k", on_conflict="replace", unique_states=["queued", "running"]
    )
    assert again.pk == job.pk
    assert again.unique_conflict
    assert Job.objects.get().args == [1, 1]


# Races (PostgreSQL: writers that really run at once) -------------------------------------


def in_threads(count: int, call: Any) -> list[Any]:
    """Run ``call`` in ``count`` threads released together; return what each returned."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.mark.postgres_only
def test_fifty_threads_scheduling_one_key_get_one_job() -> None:
    results = in_threads(50, lambda: unique_add(1, 2).pk)
    assert not [result for result in results if isinstance(result, BaseException)], results
    assert len(set(results)) == 1
    assert Job.objects.count() == 1


def race(first_call: Any, second_call: Any, *, first_commits: bool = True) -> tuple[Job, Job]:
    """``first_call`` in a transaction left open, ``second_call`` meanwhile in a thread of its own.

    The second call must wait for the first transaction; that one then commits (or rolls back,
    unless ``first_commits``), and the two calls' jobs are returned.
    """
    inserted = threading.Event()
    finish = threading.Event()
    first: list[Job] = []
    second: list[Job] = []

    def first_caller() -> None:
        try:
            with transaction.atomic():
                first.append(first_call())
                inserted.set()
                finish.wait(30)
                if not first_commits:
                    transaction.set_rollback(True)
        finally:
            connection.close()

    def second_caller() -> None:
        try:
            second.append(second_call())
        finally:
            connection.close()

    opener = threading.Thread(target=first_caller)
    opener.start()
    assert inserted.wait(30)
    waiter = threading.Thread(target=second_caller)
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive()  # it waits for the first transaction to end
    finish.set()
    opener.join(30)
    waiter.join(30)
    return first[0], second[0]


@pytest.mark.postgres_only
@pytest.mark.parametrize("first_commits", [True, False], ids=["commit", "rollback"])
def test_a_second_caller_waits_for_the_first_transaction(first_commits: bool) -> None:
    first, job = race(lambda: unique_add(1, 2), lambda: unique_add(1, 2), first_commits=first_commits)
    assert job.unique_conflict is first_commits
    assert (job.pk == first.pk) is first_commits
    assert Job.objects.count() == 1


@pytest.mark.postgres_only
def test_replace_that_waited_for_a_racing_insert_still_replaces_its_arguments() -> None:
    """Two calls race on a key no job holds: the one whose INSERT waited gives the job its arguments."""

    def replacing(value: int) -> Job:
        return schedule(tasks.add, [value, 0], unique_key="racing", on_conflict="replace")

    first, job = race(lambda: replacing(1), lambda: replacing(2))
    assert (job.pk, job.unique_conflict) == (first.pk, True)
    assert list(Job.objects.values_list("args", flat=True)) == [[2, 0]]


def test_a_job_written_without_the_unique_columns_is_a_plain_job() -> None:
    # As the release before unique jobs writes it, during a rolling deploy: the database's
    # defaults fill the new columns.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO aio_async_job (name, args, kwargs, meta, identity, queue, priority, status, "
            "added, run_after, attempts, excused, max_attempts, isolated, locked_by) "
            "VALUES ('tests.app.tasks.add', '[1, 2]', '{}', '{}', 'x', 'default', 5, 'queued', "
            "%s, %s, 0, 0, 5, %s, '')",
            [timezone.now(), timezone.now(), False],
        )
    job = Job.objects.get()
    assert (job.unique_key, job.unique_states) == (None, "")
    assert not unique_add(1, 2).unique_conflict
