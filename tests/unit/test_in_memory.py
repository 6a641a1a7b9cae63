"""aio_async.testing.in_memory(): schedule and run jobs in a test that has no database.

These tests are unit tests: pytest-django refuses every database query in them, so each one
also proves that nothing it does reaches a database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.dispatch import Signal

from aio_async import (
    InvalidOption,
    cancel,
    deschedule,
    retry,
    schedule,
    schedule_many,
    signals,
    testing,
)
from aio_async.store.memory import MemoryQueue
from tests.app import tasks


@pytest.fixture
def queue() -> Iterator[MemoryQueue]:
    with testing.in_memory() as queue:
        yield queue


@pytest.fixture
def sent() -> Iterator[list[tuple[str, int]]]:
    """The lifecycle signals sent: (name, job id)."""
    found: list[tuple[str, int]] = []
    names = ("job_scheduled", "job_cancelled", "job_started", "job_succeeded", "job_retrying", "job_failed")
    receivers = []
    for name in names:
        signal: Signal = getattr(signals, name)

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            found.append((_name, kwargs["job_id"]))

        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    yield found
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def test_jobs_are_scheduled_and_run_in_memory(queue: MemoryQueue, sent: list[tuple[str, int]]) -> None:
    first = schedule(tasks.add, [1, 2])
    second = schedule(tasks.asleep, [0.01])
    assert [job.pk for job in queue.jobs] == [first.pk, second.pk]
    assert testing.enqueued_jobs(tasks.add) == [first]
    testing.assert_enqueued(tasks.add, args=[1, 2])
    assert testing.run_jobs() == {"succeeded": 2}
    assert [(job.status, job.result, job.attempts) for job in queue.jobs] == [
        ("succeeded", 3, 1),
        ("succeeded", 0.01, 1),
    ]
    testing.refute_enqueued(tasks.add)
    assert [name for name, job_id in sent if job_id == first.pk] == [
        "job_scheduled",
        "job_started",
        "job_succeeded",
    ]


def test_a_failing_job_is_retried_by_the_back_off_then_failed_with_its_errors(queue: MemoryQueue) -> None:
    job = schedule(tasks.afail, ["no"], max_attempts=2)
    assert testing.run_jobs() == {"retrying": 1}
    assert (job.status, job.attempts) == ("queued", 1)  # back in the queue, due later
    assert testing.drain(with_scheduled=True) == {"failed": 1}
    assert job.status == "failed"
    assert [(error.exception, error.message) for error in queue.errors(job)] == [("RuntimeError", "no")] * 2


def test_a_unique_key_is_held_by_one_job_and_replace_gives_it_the_last_arguments(queue: MemoryQueue) -> None:
    first = schedule(tasks.add, [1, 2], unique=True)
    again = schedule(tasks.add, [1, 2], unique=True)
    assert (again.pk, again.unique_conflict) == (first.pk, True)
    keyed = schedule(tasks.add, [1, 1], unique_key="sum", on_conflict="replace")
    replaced = schedule(tasks.add, [2, 2], unique_key="sum", on_conflict="replace")
    assert (replaced.pk, keyed.args) == (keyed.pk, [2, 2])
    assert len(queue.jobs) == 2
    assert testing.run_jobs() == {"succeeded": 2}
    assert keyed.result == 4


def test_a_job_after_others_waits_for_them_and_is_cancelled_if_one_fails(queue: MemoryQueue) -> None:
    ok, failing = schedule(tasks.add, [1, 1]), schedule(tasks.afail, ["x"], max_attempts=1)
    after_ok = schedule(tasks.add, [2, 2], after=[ok])
    after_both = schedule(tasks.add, [3, 3], after=[ok, failing])
    assert (after_ok.status, after_both.status) == ("waiting", "waiting")
    assert testing.drain() == {"succeeded": 2, "failed": 1}
    assert (after_ok.status, after_ok.result, after_both.status) == ("succeeded", 4, "cancelled")


def test_cancel_deschedule_and_retry_change_jobs_in_memory(
    queue: MemoryQueue, sent: list[tuple[str, int]]
) -> None:
    first, second, third = schedule_many(tasks.add, [([n, n], {}) for n in range(3)])
    assert cancel(first) == 1
    assert deschedule(tasks.add, [1, 1]) == 1
    assert (first.status, second.status, third.status) == ("cancelled", "cancelled", "queued")
    assert ("job_cancelled", first.pk) in sent
    assert retry([first]) == [first.pk]
    assert testing.run_jobs() == {"succeeded": 2}
    assert (first.result, third.result) == (0, 4)


def test_a_snoozed_job_runs_again_without_using_an_attempt(queue: MemoryQueue) -> None:
    job = schedule(tasks.asnooze, [2], max_attempts=1)
    assert testing.drain() == {"snoozed": 2, "succeeded": 1}  # Snooze(0): due again at once
    assert (job.status, job.result, job.excused) == ("succeeded", 3, 2)


def test_jobs_with_limits_run_in_memory_too(queue: MemoryQueue) -> None:
    schedule_many(tasks.limited, [([n], {}) for n in range(3)])
    schedule(tasks.sync_customer, ["ada", 0.0])
    assert testing.run_jobs() == {"succeeded": 4}


def test_what_needs_the_database_says_so(queue: MemoryQueue) -> None:
    with pytest.raises(InvalidOption, match="group= needs the database"):
        schedule(tasks.add, [1, 2], group="batch")
    with pytest.raises(InvalidOption, match="after=: no job 999"):
        schedule(tasks.add, [1, 2], after=[999])
    assert queue.jobs == []


def test_outside_the_block_the_database_is_the_queue_again() -> None:
    with testing.in_memory() as queue:
        schedule(tasks.add, [1, 2])
    assert len(queue.jobs) == 1
    with pytest.raises(RuntimeError, match="Database access not allowed"):
        schedule(tasks.add, [1, 2])


def test_a_django_task_is_enqueued_run_and_its_result_read_in_memory(queue: MemoryQueue) -> None:
    from tests.app import django_tasks as dj

    meaning = dj.calculate_meaning_of_life.enqueue()
    failing = dj.failing_task_value_error.enqueue()
    assert {job.pk for job in queue.jobs} == {int(meaning.id), int(failing.id)}
    testing.drain(with_scheduled=True)
    meaning.refresh()
    failing.refresh()
    assert (meaning.status, meaning.return_value) == (dj.TaskResultStatus.SUCCESSFUL, 42)
    assert failing.status == dj.TaskResultStatus.FAILED
    assert failing.errors[-1].exception_class_path == "builtins.ValueError"
