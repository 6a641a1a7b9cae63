"""Running jobs: promises 2, 5 and 7 end to end, with a real worker on a real database."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from aio_async import schedule
from aio_async.conf import Backoff
from aio_async.models import Error, Group, Job, Status
from aio_async.values import Outcome
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import UNDECODABLE, drain, write_raw_args

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_sync_jobs_writes_and_its_completion_commit_together() -> None:
    job = schedule(tasks.write, ["a"], {"value": 7})
    assert drain() == {Outcome.SUCCEEDED: 1}
    job.refresh_from_db()
    record = Record.objects.get()
    assert (record.key, record.value) == ("a", 7)
    assert job.status == Status.SUCCEEDED
    assert job.result == record.pk
    assert job.attempts == 1
    assert job.finished is not None
    assert job.started is not None
    assert job.started <= job.finished
    assert job.locked_by  # the worker that ran the last attempt
    assert job.locked_until is None
    assert not Error.objects.exists()


def test_a_failure_rolls_the_jobs_work_back_and_records_an_error_then_backs_off() -> None:
    job = schedule(tasks.write_then_fail, ["b"])
    before = timezone.now()
    assert drain() == {Outcome.RETRYING: 1}
    job.refresh_from_db()
    assert not Record.objects.exists()
    assert job.status == Status.QUEUED
    assert job.priority == 4
    assert job.attempts == 1
    assert job.locked_by == ""
    delay = (job.run_after - before).total_seconds()
    assert 60 * 0.9 - 1 <= delay <= 60 * 1.1 + 1
    error = Error.objects.get()
    assert error.job_id == job.pk
    assert error.attempt == 1
    assert error.exception == "ValueError"
    assert error.message == "failing after writing b"
    assert "Traceback (most recent call last)" in error.traceback
    assert 'raise ValueError(f"failing after writing {key}")' in error.traceback
    assert error.worker


def test_retries_until_max_attempts_then_failed() -> None:
    job = schedule(tasks.write_then_fail, ["c"], max_attempts=3)
    outcomes = drain(backoff=Backoff(base=0, jitter=0))
    assert outcomes == {Outcome.RETRYING: 2, Outcome.FAILED: 1}
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.attempts == 3
    assert job.priority == 3  # lowered by one on each retry
    assert list(job.errors.order_by("attempt").values_list("attempt", flat=True)) == [1, 2, 3]
    assert not Record.objects.exists()


def test_a_result_that_is_not_json_fails_the_job_and_rolls_its_work_back() -> None:
    job = schedule(tasks.write_then_return_set, ["d"], max_attempts=1)
    assert drain() == {Outcome.FAILED: 1}
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.result is None
    assert not Record.objects.exists()
    error = Error.objects.get()
    assert error.exception == "aio_async.errors.ResultNotJSON"
    assert "the result is a set" in error.message


def test_a_result_that_is_not_json_fails_the_attempt_which_is_retried_like_any_failure() -> None:
    job = schedule(tasks.write_then_return_set, ["d"], max_attempts=2)
    assert drain(backoff=Backoff(base=0, jitter=0)) == {Outcome.RETRYING: 1, Outcome.FAILED: 1}
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.FAILED, 2)
    assert list(job.errors.order_by("attempt").values_list("attempt", "exception")) == [
        (1, "aio_async.errors.ResultNotJSON"),
        (2, "aio_async.errors.ResultNotJSON"),
    ]
    assert not Record.objects.exists()


def test_system_exit_and_keyboard_interrupt_are_failures_and_the_worker_carries_on() -> None:
    exiting = schedule(tasks.write_then_exit, ["e"], max_attempts=1)
    interrupted = schedule(tasks.keyboard_interrupt, max_attempts=1)
    fine = schedule(tasks.write, ["still runs"])
    outcomes = drain(concurrency=1)
    assert outcomes == {Outcome.FAILED: 2, Outcome.SUCCEEDED: 1}
    assert Error.objects.get(job=exiting).exception == "SystemExit"
    assert Error.objects.get(job=interrupted).exception == "KeyboardInterrupt"
    assert list(Record.objects.values_list("key", flat=True)) == ["still runs"]
    fine.refresh_from_db()
    assert fine.status == Status.SUCCEEDED


def test_coroutine_jobs_are_awaited_and_their_failures_recorded() -> None:
    good = schedule(tasks.awrite, ["async"])
    bad = schedule(tasks.afail, ["boom"], max_attempts=1)
    task_job = tasks.adecorated.schedule(["decorated"])
    assert drain() == {Outcome.SUCCEEDED: 2, Outcome.FAILED: 1}
    good.refresh_from_db()
    assert good.status == Status.SUCCEEDED
    assert good.result == Record.objects.get(key="async").pk
    assert Job.objects.get(pk=task_job.pk).result == "decorated"
    error = Error.objects.get(job=bad)
    assert (error.exception, error.message) == ("RuntimeError", "boom")
    assert "afail" in error.traceback


def test_a_coroutine_job_past_its_timeout_is_cancelled_and_recorded() -> None:
    job = schedule(tasks.asleep, [5], timeout=0.1, max_attempts=1)
    assert drain() == {Outcome.FAILED: 1}
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert Error.objects.get(job=job).exception == "TimeoutError"


def test_order_is_priority_then_run_after_then_id() -> None:
    now = timezone.now()
    schedule(tasks.write, ["low"], priority=1)
    schedule(tasks.write, ["five-later"], priority=5, run_after=now - datetime.timedelta(seconds=1))
    schedule(tasks.write, ["five-earlier"], priority=5, run_after=now - datetime.timedelta(seconds=2))
    schedule(tasks.write, ["five-same-a"], priority=5, run_after=now)
    schedule(tasks.write, ["five-same-b"], priority=5, run_after=now)
    schedule(tasks.write, ["high"], priority=9)
    schedule(tasks.write, ["future"], priority=99, run_after=datetime.timedelta(hours=1))
    drain(concurrency=1)
    assert list(Record.objects.order_by("pk").values_list("key", flat=True)) == [
        "high",
        "five-earlier",
        "five-later",
        "five-same-a",
        "five-same-b",
        "low",
    ]
    assert Job.objects.get(args=["future"]).status == Status.QUEUED


def test_a_forged_row_naming_a_disallowed_function_is_refused_not_run() -> None:
    forged = Job.objects.create(name="os.system", args=["touch /tmp/aio-async-hacked"], identity="x")
    imported = Job.objects.create(name="tests.app.tasks.system", args=["true"], identity="y")
    assert drain() == {Outcome.FAILED: 2}
    for job in (forged, imported):
        job.refresh_from_db()
        assert job.status == Status.FAILED
        assert job.attempts == 1  # failed at once: retrying cannot make it allowed
        error = Error.objects.get(job=job)
        assert error.exception == "aio_async.errors.JobRefused"
        assert error.message.startswith("TaskNotAllowed: ")
        assert "not allowed" in error.message


def test_forged_rows_with_bad_arguments_fail_with_a_clear_error() -> None:
    not_a_list = Job.objects.create(name="tests.app.tasks.write", args={"key": "x"}, identity="a")
    bad_kwargs = Job.objects.create(name="tests.app.tasks.write", kwargs=[1], identity="b")
    fine = schedule(tasks.write, ["fine"])
    assert drain() == {Outcome.FAILED: 2, Outcome.SUCCEEDED: 1}
    assert "args must be a JSON array" in Error.objects.get(job=not_a_list).message
    assert "kwargs a JSON object, got list and list" in Error.objects.get(job=bad_kwargs).message
    assert Job.objects.get(pk=fine.pk).status == Status.SUCCEEDED
    assert list(Record.objects.values_list("key", flat=True)) == ["fine"]


def test_a_huge_forged_row_fails_with_a_clear_error_and_the_worker_carries_on() -> None:
    huge = Job.objects.create(name="tests.app.tasks.add", args=["x" * 5_000_000, 1], identity="h")
    fine = schedule(tasks.write, ["after the huge one"])
    assert drain(concurrency=1) == {Outcome.RETRYING: 1, Outcome.SUCCEEDED: 1}
    error = Error.objects.get(job=huge)
    assert error.exception == "TypeError"
    assert len(error.message) < 200  # the payload is not copied into the error
    assert Job.objects.get(pk=fine.pk).status == Status.SUCCEEDED


def test_a_name_that_does_not_import_is_retried_as_a_deploy_may_be_in_progress() -> None:
    job = Job.objects.create(name="tests.app.tasks.added_tomorrow", identity="z")
    assert drain() == {Outcome.RETRYING: 1}
    job.refresh_from_db()
    assert job.status == Status.QUEUED
    error = Error.objects.get(job=job)
    assert (error.exception, error.message.split(":")[0]) == (
        "aio_async.errors.JobRefused",
        "FunctionNotFound",
    )


def test_the_final_job_of_a_group_runs_after_every_other_member() -> None:
    group = Group.objects.create(reference="report")
    for key in ("m1", "m2", "m3"):
        schedule(tasks.write, [key], group=group)
    final = schedule(tasks.write, ["final"], group=group, priority=100)
    group.on_completion(final)
    drain(concurrency=2)
    assert list(Record.objects.order_by("pk").values_list("key", flat=True))[-1] == "final"
    assert Record.objects.count() == 4
    final.refresh_from_db()
    assert final.status == Status.SUCCEEDED


def test_a_member_that_fails_for_good_still_lets_the_final_job_run() -> None:
    group = Group.objects.create(reference="report")
    schedule(tasks.write_then_fail, ["m"], group=group, max_attempts=1)
    final = schedule(tasks.write, ["final"], group=group)
    group.on_completion(final)
    assert drain() == {Outcome.FAILED: 1, Outcome.SUCCEEDED: 1}
    assert list(Record.objects.values_list("key", flat=True)) == ["final"]


def test_flush_filters_by_name_and_limits_jobs() -> None:
    from aio_async.cli import flush

    schedule(tasks.write, ["w1"])
    schedule(tasks.write, ["w2"])
    schedule(tasks.add, [1, 2])
    schedule(tasks.Maths.double, [2])
    assert flush(include=["add", "double"]) == {"succeeded": 2}
    assert flush(exclude=["write"]) == {}
    assert flush(max_jobs=1) == {"succeeded": 1}
    assert Record.objects.count() == 1
    assert flush() == {"succeeded": 1}


def test_many_jobs_at_concurrency_all_run_once() -> None:
    for index in range(60):
        schedule(tasks.write if index % 2 else tasks.awrite, [f"k{index}"])
    assert drain(concurrency=8) == {Outcome.SUCCEEDED: 60}
    assert Record.objects.count() == 60
    assert Record.objects.values("key").distinct().count() == 60


def test_a_sync_job_past_its_timeout_is_failed_and_its_late_commit_refused() -> None:
    job = schedule(tasks.write_after, ["late", 1.0], timeout=0.2, max_attempts=1)
    outcomes = drain()
    job.refresh_from_db()
    assert outcomes == {Outcome.FAILED: 1}
    assert job.status == Status.FAILED
    error = Error.objects.get(job=job)
    assert error.exception == "TimeoutError"
    assert "timeout of 0.2 s" in error.message
    # The worker waited for the thread before exiting: it finished past its deadline, and its
    # own completion refused to commit (on SQLite the failure write waited for it).
    assert not Record.objects.filter(key="late").exists()


def test_forged_values_fail_their_own_row_alone_and_every_good_job_runs(is_postgres: bool) -> None:
    good = [schedule(tasks.write, [f"good-{n}"]) for n in range(3)]
    at_limit = schedule(tasks.write, ["attempts"])
    not_a_number = schedule(tasks.write, ["nan"])
    lowest = schedule(tasks.write_then_fail, ["lowest"], max_attempts=2)
    Job.objects.filter(pk=at_limit.pk).update(attempts=2147483647)
    # SQLite stores NaN as NULL: a negative timeout is as forged there.
    Job.objects.filter(pk=not_a_number.pk).update(timeout=float("nan") if is_postgres else -1.0)
    Job.objects.filter(pk=lowest.pk).update(priority=-2147483648)
    undecodable = schedule(tasks.write, ["undecodable"])
    write_raw_args(undecodable.pk, UNDECODABLE)
    forged = [at_limit, not_a_number, undecodable]
    outcomes = drain()
    assert outcomes[Outcome.SUCCEEDED] == len(good)
    assert outcomes[Outcome.RETRYING] == 1  # the lowest priority retried, not overflowed
    assert Job.objects.get(pk=lowest.pk).priority == -2147483648
    for job in forged:
        assert Job.objects.filter(pk=job.pk).values_list("status", flat=True).get() == Status.FAILED
        assert Error.objects.get(job_id=job.pk).exception == "aio_async.errors.JobRefused"
    assert sorted(Record.objects.values_list("key", flat=True)) == [f"good-{n}" for n in range(3)]


def test_a_job_knows_which_job_and_attempt_it_is() -> None:
    from aio_async import current_job

    with pytest.raises(LookupError, match="inside a job"):
        current_job()
    sync = schedule(tasks.whoami, max_attempts=1)
    coroutine = schedule(tasks.awhoami, max_attempts=3)
    assert drain() == {Outcome.SUCCEEDED: 2}
    for job, last in ((sync, True), (coroutine, False)):
        result = Job.objects.get(pk=job.pk).result
        assert isinstance(result, dict)
        assert (result["id"], result["attempt"], result["last"]) == (job.pk, 1, last)
        assert result["worker"] == Job.objects.get(pk=job.pk).locked_by
