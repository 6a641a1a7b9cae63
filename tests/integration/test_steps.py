"""Durable steps, sleeps and waits for events: each step commits once, on both databases."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

import aio_async
import aio_async.signals
import aio_async.testing
from aio_async import EventTimeout, StepError, StepsChanged, schedule
from aio_async.models import AttemptRecord, Error, Job, Status, Step
from aio_async.values import Outcome
from tests.app import step_tasks
from tests.app.models import Record
from tests.conftest import beside, drain, until

pytestmark = pytest.mark.django_db(transaction=True)


def keys() -> list[str]:
    return sorted(Record.objects.values_list("key", flat=True))


def due_now(job: Job) -> None:
    """Skip a retry's back-off: the job is due at once."""
    Job.objects.filter(pk=job.pk).update(run_after=timezone.now())


def journal(job: Job) -> list[tuple[str, str, int]]:
    return list(Step.objects.filter(job=job).order_by("position").values_list("name", "status", "attempt"))


def test_a_job_of_three_steps_records_each_and_returns_their_results() -> None:
    job = schedule(step_tasks.three_steps, ["k"])
    assert drain() == {Outcome.SUCCEEDED: 1}
    job.refresh_from_db()
    ids = dict(Record.objects.values_list("key", "pk"))
    assert job.result == [ids["k-1"], ids["k-2"], ids["k-3"]]
    assert journal(job) == [("one", "succeeded", 1), ("two", "succeeded", 1), ("three", "succeeded", 1)]
    assert [step.result for step in Step.objects.filter(job=job).order_by("position")] == job.result


def test_a_retry_resumes_at_the_failed_step_and_never_runs_a_committed_one_again(tmp_path: Path) -> None:
    marker = tmp_path / "pass"
    job = schedule(step_tasks.steps_then_fail_once, ["r", str(marker)])
    assert drain() == {Outcome.RETRYING: 1}
    assert keys() == ["r-1"]  # step two's write rolled back with it
    assert journal(job) == [("one", "succeeded", 1), ("two", "failed", 1)]
    failed = Step.objects.get(job=job, name="two")
    assert failed.error.startswith("RuntimeError: no ")
    assert failed.ended is not None
    assert Error.objects.get(job=job).exception == "RuntimeError"
    marker.write_text("")
    due_now(job)
    assert drain() == {Outcome.SUCCEEDED: 1}
    assert keys() == ["r-1", "r-2", "r-3"]  # step one did not run again
    assert journal(job) == [("one", "succeeded", 1), ("two", "succeeded", 2), ("three", "succeeded", 2)]
    job.refresh_from_db()
    assert job.result is not None
    assert job.result[1] == "passed"


def test_writes_between_steps_commit_with_the_next_step_and_are_not_doubled_by_a_replay() -> None:
    job = schedule(step_tasks.write_between_steps, ["w"], max_attempts=2)
    assert drain() == {Outcome.RETRYING: 1}
    # "before" committed with step one; "between" belongs to step two, which failed.
    assert keys() == ["w-1", "w-before"]
    due_now(job)
    assert drain() == {Outcome.FAILED: 1}
    assert keys() == ["w-1", "w-before"]  # the replay rolled "before" back: it had committed


def test_a_step_name_used_twice_is_refused_before_it_runs() -> None:
    job = schedule(step_tasks.step_twice, ["d"], max_attempts=1)
    assert drain() == {Outcome.FAILED: 1}
    error = Error.objects.get(job=job)
    assert error.exception == "aio_async.errors.StepError"
    assert "reached a step named 'same' twice" in error.message
    assert keys() == ["d-1"]


def test_a_step_inside_the_jobs_own_atomic_block_is_refused() -> None:
    job = schedule(step_tasks.step_in_atomic, ["a"], max_attempts=1)
    assert drain() == {Outcome.FAILED: 1}
    assert "cannot run inside transaction.atomic()" in Error.objects.get(job=job).message
    assert keys() == []


def test_step_outside_a_job_says_where_it_runs() -> None:
    with pytest.raises(StepError, match="inside a job run by a worker"):
        aio_async.step("x", step_tasks.record, "k")


def test_a_coroutine_job_calling_the_sync_step_is_told_to_await_astep() -> None:
    job = schedule(step_tasks.wrong_kind, max_attempts=1)
    assert drain() == {Outcome.FAILED: 1}
    assert "a coroutine job awaits astep()" in Error.objects.get(job=job).message


def test_a_step_renamed_between_attempts_stops_the_job_before_anything_new_runs() -> None:
    job = schedule(step_tasks.renamed_steps, ["c", 1], max_attempts=3)
    assert drain() == {Outcome.RETRYING: 1}
    assert journal(job) == [("a", "succeeded", 1), ("b", "succeeded", 1)]
    Job.objects.filter(pk=job.pk).update(args=["c", 2], run_after=timezone.now())  # the deploy
    assert drain() == {Outcome.RETRYING: 1}
    error = Error.objects.filter(job=job).order_by("-attempt").first()
    assert error is not None
    assert error.exception == "aio_async.errors.StepsChanged"
    assert "recorded 'b' in an earlier attempt" in error.message
    assert "'c'" in error.message
    assert keys() == ["c-a", "c-b"]  # c never ran
    assert aio_async.forget_steps(job.pk, "b") == 1
    due_now(job)
    assert drain() == {Outcome.SUCCEEDED: 1}
    assert keys() == ["c-a", "c-b", "c-c"]


def test_a_coroutine_jobs_steps_run_once_each() -> None:
    job = schedule(step_tasks.athree_steps, ["co"])
    assert drain() == {Outcome.SUCCEEDED: 1}
    job.refresh_from_db()
    assert job.result is not None
    assert job.result[2] == "hello co"
    assert keys() == ["co-1", "co-2"]
    assert [name for name, _, _ in journal(job)] == ["one", "two", "three"]


def test_a_durable_sleep_frees_the_worker_and_resumes_after_its_delay() -> None:
    job = schedule(step_tasks.sleep_between, ["s", 0.5])
    assert drain() == {Outcome.SUSPENDED: 1}
    job.refresh_from_db()
    assert (job.status, job.excused, job.locked_by) == (Status.SUSPENDED, 1, "")
    assert journal(job) == [("before", "succeeded", 1), ("nap", "sleeping", 1)]
    assert AttemptRecord.objects.get(job=job).outcome == "suspended"
    time.sleep(0.6)
    assert drain() == {Outcome.SUCCEEDED: 1}
    job.refresh_from_db()
    assert (job.status, job.attempts, job.excused) == (Status.SUCCEEDED, 2, 1)
    assert keys() == ["s-after", "s-before"]
    nap = Step.objects.get(job=job, name="nap")
    assert (nap.status, nap.attempt) == ("succeeded", 2)  # recorded as ended by the attempt past it
    assert nap.until is not None
    assert nap.ended is not None
    assert nap.ended >= nap.until


def test_a_coroutine_job_sleeps_durably_too() -> None:
    job = schedule(step_tasks.asleep_between, ["as", 0.3])
    assert drain() == {Outcome.SUSPENDED: 1}
    time.sleep(0.4)
    assert drain() == {Outcome.SUCCEEDED: 1}
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED
    assert keys() == ["as-after", "as-before"]


@pytest.mark.parametrize("task", [step_tasks.wait_between, step_tasks.await_between])
def test_a_wait_suspends_the_job_until_its_event_and_returns_the_payload(task: Callable[..., Any]) -> None:
    job = schedule(task, ["e", "order-1", None])
    assert drain() == {Outcome.SUSPENDED: 1}
    job.refresh_from_db()
    assert job.status == Status.SUSPENDED
    assert drain() == {}  # nothing wakes it but its event
    assert aio_async.notify_event("order-2", {"value": 9}) == []  # another key
    assert aio_async.notify_event("order-1", {"value": 7}) == [job.pk]
    assert drain() == {Outcome.SUCCEEDED: 1}
    job.refresh_from_db()
    assert job.result == {"value": 7}
    assert Record.objects.get(key="e-after").value == 7


def test_an_event_sent_before_the_wait_is_not_lost() -> None:
    job = schedule(step_tasks.wait_between, ["early", "early-1", None])
    aio_async.notify_event("early-1", {"value": 3})
    assert drain() == {Outcome.SUCCEEDED: 1}
    job.refresh_from_db()
    assert job.result == {"value": 3}


def test_an_event_sent_before_the_job_was_scheduled_is_not_its_event() -> None:
    aio_async.notify_event("old-1", {"value": 1})
    time.sleep(0.01)
    job = schedule(step_tasks.wait_between, ["old", "old-1", None])
    assert drain() == {Outcome.SUSPENDED: 1}
    job.refresh_from_db()
    assert job.status == Status.SUSPENDED


def test_a_rolled_back_notify_wakes_nobody() -> None:
    job = schedule(step_tasks.wait_between, ["rb", "rb-1", None])
    assert drain() == {Outcome.SUSPENDED: 1}
    with pytest.raises(RuntimeError), transaction.atomic():
        assert aio_async.notify_event("rb-1", {"value": 1}) == [job.pk]
        raise RuntimeError("roll back")
    job.refresh_from_db()
    assert job.status == Status.SUSPENDED
    assert drain() == {}


def test_a_wait_times_out_and_fails_the_job_for_good() -> None:
    job = schedule(step_tasks.wait_between, ["to", "to-1", 0.2], max_attempts=5)
    assert drain() == {Outcome.SUSPENDED: 1}
    time.sleep(0.3)
    assert drain() == {Outcome.FAILED: 1}
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert Error.objects.get(job=job).exception == "aio_async.errors.EventTimeout"
    assert journal(job) == [("before", "succeeded", 1), ("approval", "timed_out", 2)]


def test_a_caught_timeout_lets_the_job_go_on() -> None:
    job = schedule(step_tasks.wait_catching_timeout, ["tc-1", 0.1])
    assert drain() == {Outcome.SUSPENDED: 1}
    time.sleep(0.2)
    assert drain() == {Outcome.SUCCEEDED: 1}
    job.refresh_from_db()
    assert job.result == "timed out"
    assert issubclass(EventTimeout, TimeoutError)


def test_cancelling_a_waiting_job_cancels_it_at_once() -> None:
    job = schedule(step_tasks.wait_between, ["cw", "cw-1", None])
    assert drain() == {Outcome.SUSPENDED: 1}
    assert aio_async.cancel(job) == 1
    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert aio_async.notify_event("cw-1", {"value": 1}) == []
    assert drain() == {}


def test_an_event_for_a_deleted_job_is_kept_and_wakes_nothing() -> None:
    job = schedule(step_tasks.wait_between, ["del", "del-1", None])
    assert drain() == {Outcome.SUSPENDED: 1}
    Job.objects.filter(pk=job.pk).delete()
    assert not Step.objects.exists()
    assert aio_async.notify_event("del-1", {"value": 1}) == []
    assert drain() == {}


def test_bad_durable_arguments_are_refused_clearly() -> None:
    with pytest.raises(StepError, match="an event key is a non-empty string"):
        aio_async.notify_event("", None)
    with pytest.raises(Exception, match="JSON"):
        aio_async.notify_event("k", {1, 2})
    assert issubclass(StepsChanged, StepError)


def test_a_suspended_job_counts_apart_from_queued_ones() -> None:
    schedule(step_tasks.sleep_between, ["h", 60])
    schedule(step_tasks.record, ["plain"], run_after=timezone.now() + datetime.timedelta(hours=1))
    assert drain() == {Outcome.SUSPENDED: 1}
    report = aio_async.health()
    assert (report["suspended"], report["queued"], report["remaining"]) == (1, 1, 2)


def test_a_step_removed_at_the_end_lets_the_job_finish_since_nothing_new_runs() -> None:
    job = schedule(step_tasks.renamed_steps, ["rm", 1], max_attempts=3)
    assert drain() == {Outcome.RETRYING: 1}
    Job.objects.filter(pk=job.pk).update(args=["rm", 3], run_after=timezone.now())
    assert drain() == {Outcome.SUCCEEDED: 1}
    assert keys() == ["rm-a", "rm-b"]


def test_suspended_jobs_hold_no_slot() -> None:
    waiting = [
        schedule(step_tasks.wait_between, [f"slot{index}", f"slot-{index}", None]) for index in range(3)
    ]
    assert drain(concurrency=1) == {Outcome.SUSPENDED: 3}
    plain = schedule(step_tasks.record, ["plain"])
    assert drain(concurrency=1) == {Outcome.SUCCEEDED: 1}
    plain.refresh_from_db()
    assert plain.status == Status.SUCCEEDED
    assert Job.objects.filter(pk__in=[job.pk for job in waiting], status=Status.SUSPENDED).count() == 3


def test_step_signals_are_sent_for_the_steps_that_run_not_for_replayed_ones(tmp_path: Path) -> None:
    seen: list[tuple[str, str, int, bool | None]] = []

    def started(sender: object, **kwargs: Any) -> None:
        seen.append(("started", kwargs["step"], kwargs["attempt"], None))

    def ended(sender: object, **kwargs: Any) -> None:
        seen.append(("ended", kwargs["step"], kwargs["attempt"], kwargs["succeeded"]))

    aio_async.signals.step_started.connect(started)
    aio_async.signals.step_ended.connect(ended)
    try:
        job = schedule(step_tasks.steps_then_fail_once, ["sig", str(tmp_path / "pass")])
        drain()
        (tmp_path / "pass").write_text("")
        due_now(job)
        drain()
    finally:
        aio_async.signals.step_started.disconnect(started)
        aio_async.signals.step_ended.disconnect(ended)
    assert seen == [
        ("started", "one", 1, None),
        ("ended", "one", 1, True),
        ("started", "two", 1, None),
        ("ended", "two", 1, False),
        ("started", "two", 2, None),
        ("ended", "two", 2, True),
        ("started", "three", 2, None),
        ("ended", "three", 2, True),
    ]


@pytest.mark.postgres_only  # SQLite: the running step's write transaction holds the one write lock
async def test_a_job_cancelled_while_a_step_runs_stops_there_and_its_step_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEP_PAUSE", "1.0")
    job = await sync_to_async(schedule)(step_tasks.pause_in_step, ["cx", str(tmp_path)])
    async with beside():
        await until(lambda: Path(tmp_path, "1.pid").exists())
        assert await aio_async.acancel(job) == 1
        await until(lambda: not Job.objects.filter(pk=job.pk, status=Status.RUNNING).exists())
        await asyncio.sleep(1.2)  # the step's function returns: its checkpoint is refused
    assert await sync_to_async(keys)() == ["cx-1"]
    await job.arefresh_from_db()
    assert job.status == Status.CANCELLED
    names = [name async for name in Step.objects.filter(job=job).values_list("name", flat=True)]
    assert names == ["one"]


def test_the_testing_drain_with_scheduled_runs_a_sleeping_job_to_its_end() -> None:
    job = schedule(step_tasks.sleep_between, ["day", 86400])
    assert aio_async.testing.drain() == {"suspended": 1}
    assert aio_async.testing.drain(with_scheduled=True) == {"succeeded": 1}
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED
    assert keys() == ["day-after", "day-before"]


@pytest.mark.psycopg3  # the worker LISTENs with psycopg 3; with psycopg2 it polls
async def test_on_postgresql_an_event_wakes_its_job_at_once_not_at_the_next_poll() -> None:
    job = await sync_to_async(schedule)(step_tasks.wait_between, ["nw", "nw-1", None])
    async with beside(poll_interval=60.0):  # only a NOTIFY can wake this worker in time
        await until(lambda: Job.objects.filter(pk=job.pk, status=Status.SUSPENDED).exists())
        await asyncio.sleep(0.2)
        assert await aio_async.anotify_event("nw-1", {"value": 5}) == [job.pk]
        await until(lambda: Job.objects.filter(pk=job.pk, status=Status.SUCCEEDED).exists(), within=10)
    assert await sync_to_async(keys)() == ["nw-after", "nw-before"]


def test_a_batch_of_checkpoints_writes_those_whose_jobs_are_held_and_only_those() -> None:
    from aio_async.store import journal
    from aio_async.store.drivers.django import run
    from aio_async.values import Attempt, Checkpoint

    held, taken = (schedule(step_tasks.record, [key]) for key in ("held", "taken"))
    Job.objects.filter(pk__in=[held.pk, taken.pk]).update(status=Status.RUNNING, attempts=1, locked_by="w")
    points = [
        (Attempt(held.pk, 1, held.name, [], {}), Checkpoint("s", 0, "step", "succeeded", 1, result=[1])),
        (Attempt(taken.pk, 2, taken.name, [], {}), Checkpoint("s", 0, "step", "succeeded", 2, result=[2])),
    ]
    lease_end = timezone.now() + datetime.timedelta(seconds=30)
    with transaction.atomic():
        saved = run(lambda dialect: journal.checkpoints(dialect, points, "w", lease_end), "default")
    assert saved == {held.pk}  # the second attempt's token is stale: nothing written for it
    assert list(Step.objects.values_list("job_id", "result")) == [(held.pk, [1])]
