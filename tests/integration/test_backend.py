"""AioAsyncBackend beyond Django's own scenarios: what a queue in your database adds.

Transactional enqueue, signals per attempt of a retried task, every field of a TaskResult
read back from the tables, cancellation, pickling, deferral by a timedelta, aio_async's
options on Django tasks, validation with nothing written, and the test helpers of
``aio_async.testing``. Tests that need a worker run twice (the ``run_all`` fixture): with a
real ``Executor`` on committed data, and in the test's own transaction with
``aio_async.testing.drain()``.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

import aio_async
from aio_async import deschedule, health, schedule, testing
from aio_async.backends import TASK_KEY, AioAsyncBackend, AioAsyncTask
from aio_async.conf import Backoff
from aio_async.errors import EventTimeout, InvalidArguments, JobCancelled, ResultNotJSON
from aio_async.models import AttemptRecord, Error, Job, Status
from aio_async.store.dialects import for_vendor
from aio_async.store.drivers.django import run_on
from aio_async.store.operations import claim, release
from aio_async.values import Attempt, ClaimRequest, Outcome
from tests.app import django_tasks as dj
from tests.app import tasks
from tests.app.django_tasks import (
    IMMEDIATE_BACKEND,
    LOGGER,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultMismatch,
    TaskResultStatus,
    default_task_backend,
    task,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from tests.app.models import Record
from tests.conftest import drain

BACKEND = f"{AioAsyncBackend.__module__}.{AioAsyncBackend.__qualname__}"
NO_BACKOFF = Backoff(base=0, jitter=0)
#: Django 6.1 pickles Tasks and TaskResults (Task.__reduce__ names the module attribute).
PICKLES = "__reduce__" in vars(Task)


def refreshed(result: TaskResult[Any, Any]) -> TaskResult[Any, Any]:
    """``result``, refreshed from the database."""
    result.refresh()
    return result


@pytest.fixture(
    params=[
        pytest.param("worker", marks=pytest.mark.django_db(transaction=True)),
        pytest.param("test_thread", marks=pytest.mark.django_db),
    ]
)
def run_all(request: pytest.FixtureRequest) -> Callable[[], object]:
    """Run every job until none is left, retries included (made due at once)."""
    if request.param == "worker":
        return lambda: drain(backoff=NO_BACKOFF)

    def in_test_thread() -> object:
        run_pending_on_commit()  # the enqueues' task_enqueued, as their commit would send it
        return testing.drain(with_scheduled=True)

    return in_test_thread


def run_pending_on_commit() -> None:
    """Run (and forget) the on_commit callbacks waiting for the test's transaction to commit."""
    while connection.run_on_commit:
        callback = connection.run_on_commit.pop(0)[1]
        callback()


@dataclasses.dataclass(frozen=True)
class Sent:
    """One signal as a receiver saw it."""

    signal: str
    sender: type
    id: str
    status: str
    attempts: int
    errors: tuple[str, ...]
    handling: type[BaseException] | None


@pytest.fixture
def sent() -> Iterator[list[Sent]]:
    """The signals of django.tasks sent during the test, in order (from any thread)."""
    seen: list[Sent] = []
    lock = threading.Lock()
    names = {id(task_enqueued): "enqueued", id(task_started): "started", id(task_finished): "finished"}

    def receiver(signal: Any, sender: type, task_result: TaskResult[Any, Any], **kwargs: Any) -> None:
        with lock:
            seen.append(
                Sent(
                    names[id(signal)],
                    sender,
                    task_result.id,
                    str(task_result.status),
                    task_result.attempts,
                    tuple(error.exception_class_path for error in task_result.errors),
                    sys.exc_info()[0],
                )
            )

    for signal in (task_enqueued, task_started, task_finished):
        signal.connect(receiver, weak=False, dispatch_uid="test_backend")
    yield seen
    for signal in (task_enqueued, task_started, task_finished):
        signal.disconnect(dispatch_uid="test_backend")


def _claim(worker_id: str = "tester:1:abc") -> Attempt:
    """Lease the next due job to ``worker_id``, as a worker's claim does."""
    request = ClaimRequest(worker_id, ("default",), datetime.timedelta(seconds=30))
    with transaction.atomic():
        (attempt,) = run_on(
            connection, claim(for_vendor(connection.vendor), request, 1, True, timezone.now())
        )
    return attempt


# Transactions ------------------------------------------------------------------------------


class _Rollback(Exception):
    pass


@pytest.mark.django_db
def test_an_enqueue_in_a_transaction_that_rolls_back_leaves_nothing() -> None:
    with pytest.raises(_Rollback), transaction.atomic():
        result = dj.write_record.enqueue("never")
        assert Job.objects.filter(pk=result.id).exists()
        raise _Rollback
    assert not Job.objects.exists()
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(result.id)


@pytest.mark.django_db(transaction=True)
def test_a_committed_enqueue_runs_and_a_sync_tasks_work_commits_with_its_completion() -> None:
    with transaction.atomic():
        done = dj.write_record.enqueue("done", value=7)
    failed = dj.always_fails.enqueue("rolled back")
    drain(backoff=NO_BACKOFF)
    record = Record.objects.get()
    assert (record.key, record.value) == ("done", 7)
    assert refreshed(done).return_value == record.pk
    assert refreshed(failed).status == TaskResultStatus.FAILED
    assert len(failed.errors) == 2  # max_attempts=2; each attempt's Record rolled back


# Signals -----------------------------------------------------------------------------------


def test_a_retried_task_sends_task_started_at_each_attempt_and_task_finished_once(
    run_all: Callable[[], object], sent: list[Sent]
) -> None:
    result = dj.flaky.enqueue("k", 3)
    run_all()
    assert [(s.signal, s.status, s.attempts) for s in sent] == [
        ("enqueued", "READY", 0),
        ("started", "RUNNING", 1),
        ("started", "RUNNING", 2),
        ("started", "RUNNING", 3),
        ("finished", "SUCCESSFUL", 3),
    ]
    assert {s.sender for s in sent} == {AioAsyncBackend}
    assert {s.id for s in sent} == {result.id}
    assert sent[3].errors == ("builtins.RuntimeError", "builtins.RuntimeError")
    assert sent[-1].handling is None
    # Each failed attempt's Record rolled back; the last one's committed with its completion.
    assert list(Record.objects.values_list("key", "value")) == [("k", 3)]
    value = refreshed(result).return_value
    assert value["attempt"] == value["job_attempt"] == 3  # TaskContext.attempt is current_job().attempt
    assert len(value["workers"]) == 3


def test_a_task_that_fails_every_attempt_sends_task_finished_from_the_last_inside_its_handler(
    run_all: Callable[[], object], sent: list[Sent], caplog: pytest.LogCaptureFixture
) -> None:
    result = dj.always_fails.enqueue("x")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run_all()
    assert [(s.signal, s.status, s.attempts) for s in sent] == [
        ("enqueued", "READY", 0),
        ("started", "RUNNING", 1),
        ("started", "RUNNING", 2),
        ("finished", "FAILED", 2),
    ]
    assert sent[-1].handling is ValueError  # sys.exc_info(), which Django's receiver logs
    assert sent[-1].errors == ("builtins.ValueError", "builtins.ValueError")
    (failed,) = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert failed.exc_info is not None
    assert failed.exc_info[0] is ValueError
    assert result.id in failed.getMessage()
    assert refreshed(result).status == TaskResultStatus.FAILED


def test_a_retried_coroutine_task_sends_the_same_signals(
    run_all: Callable[[], object], sent: list[Sent], caplog: pytest.LogCaptureFixture
) -> None:
    succeeds = dj.aflaky.enqueue(2)
    fails = dj.aflaky.enqueue(9)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run_all()
    assert [(s.signal, s.status, s.attempts) for s in sent if s.id == succeeds.id] == [
        ("enqueued", "READY", 0),
        ("started", "RUNNING", 1),
        ("started", "RUNNING", 2),
        ("finished", "SUCCESSFUL", 2),
    ]
    assert [(s.signal, s.status, s.attempts) for s in sent if s.id == fails.id][-1] == (
        "finished",
        "FAILED",
        3,
    )
    assert [s.handling for s in sent if s.signal == "finished" and s.id == fails.id] == [RuntimeError]
    (failed,) = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert failed.exc_info is not None
    assert failed.exc_info[0] is RuntimeError
    assert refreshed(succeeds).return_value == 2
    # Sending the signal from another thread left the recorded traceback as the task raised it.
    last = Error.objects.filter(job_id=fails.id).order_by("-attempt").first()
    assert last is not None
    assert "send_failure" not in last.traceback
    assert "RuntimeError: attempt 3 fails" in last.traceback


@pytest.mark.django_db(transaction=True)
def test_a_coroutine_task_past_its_timeout_on_its_last_attempt_finishes_failed(sent: list[Sent]) -> None:
    result = dj.too_slow_coroutine.enqueue(5)
    drain()
    assert refreshed(result).status == TaskResultStatus.FAILED
    assert [error.exception_class for error in result.errors] == [TimeoutError]
    assert [(s.signal, s.status) for s in sent if s.signal == "finished"] == [("finished", "FAILED")]
    assert sent[-1].handling is TimeoutError


@pytest.mark.django_db(transaction=True)
def test_a_sync_task_past_its_timeout_on_its_last_attempt_finishes_failed(sent: list[Sent]) -> None:
    result = dj.too_slow_sync.enqueue(0.8)
    drain()  # the worker fails the attempt at 0.3 s, and waits for the thread to end
    assert refreshed(result).status == TaskResultStatus.FAILED
    assert [error.exception_class for error in result.errors] == [TimeoutError]  # one Error row
    assert [(s.signal, s.status) for s in sent if s.signal == "finished"] == [("finished", "FAILED")]


# Durable steps -----------------------------------------------------------------------------


@pytest.mark.parametrize("stepped", [dj.stepped, dj.astepped], ids=["sync", "coroutine"])
def test_a_task_made_of_steps_reads_running_while_it_waits_and_finishes_once(
    stepped: Task[..., Any], run_all: Callable[[], object], sent: list[Sent]
) -> None:
    result = stepped.enqueue("st", "approved-1")
    run_all()  # its only attempt: the wait suspends it, and is no failure
    assert Job.objects.get(pk=result.id).status == Status.SUSPENDED
    waiting = refreshed(result)
    assert waiting.status == TaskResultStatus.RUNNING  # it started and is not done
    assert (waiting.finished_at, waiting.errors, len(waiting.worker_ids)) == (None, [], 1)
    assert [(s.signal, s.status) for s in sent] == [("enqueued", "READY"), ("started", "RUNNING")]
    assert aio_async.notify_event("approved-1", {"by": "ops"}) == [int(result.id)]
    run_all()
    done = refreshed(result)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert sorted(Record.objects.values_list("key", flat=True)) == ["st-1", "st-2"]  # each step once
    records = dict(Record.objects.values_list("key", "pk"))
    assert done.return_value == [records["st-1"], {"by": "ops"}, records["st-2"]]
    assert [(s.signal, s.status, s.attempts) for s in sent][2:] == [
        ("started", "RUNNING", 2),
        ("finished", "SUCCESSFUL", 2),
    ]
    assert len(done.worker_ids) == 2


@pytest.mark.django_db(transaction=True)
def test_a_task_whose_wait_timed_out_finishes_failed_with_attempts_left(sent: list[Sent]) -> None:
    result = dj.waits_briefly.enqueue("never")
    assert drain() == {Outcome.SUSPENDED: 1}
    time.sleep(0.2)
    assert drain() == {Outcome.FAILED: 1}  # a recorded timeout would time out again
    failed = refreshed(result)
    assert failed.status == TaskResultStatus.FAILED
    assert [error.exception_class_path for error in failed.errors] == ["aio_async.errors.EventTimeout"]
    assert [(s.signal, s.status) for s in sent if s.signal == "finished"] == [("finished", "FAILED")]
    assert sent[-1].handling is EventTimeout


# Results -----------------------------------------------------------------------------------


def test_every_field_of_a_result_reflects_the_job(run_all: Callable[[], object]) -> None:
    result = dj.flaky.enqueue("k", 2)
    run_all()
    job = Job.objects.get()
    error = Error.objects.get()
    fetched = default_task_backend.get_result(result.id)

    assert fetched.id == str(job.pk) == result.id
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.is_finished is True
    assert fetched.enqueued_at == job.added == result.enqueued_at
    first = job.attempt_history()[0]
    assert fetched.started_at == first.started
    assert fetched.last_attempted_at == job.started
    assert fetched.started_at < fetched.last_attempted_at  # type: ignore[operator]
    assert fetched.finished_at == job.finished
    assert fetched.worker_ids == [error.worker, job.locked_by]
    assert fetched.attempts == 2
    (task_error,) = fetched.errors
    assert task_error.exception_class is RuntimeError
    assert task_error.traceback == error.traceback
    assert task_error.traceback.endswith("RuntimeError: attempt 1 fails\n")
    assert fetched.return_value == {"attempt": 2, "job_attempt": 2, "workers": fetched.worker_ids}
    assert fetched.args == ["k", 2]
    assert fetched.kwargs == {}
    assert fetched.backend == "default"
    assert fetched.task == dj.flaky
    assert isinstance(fetched.task, AioAsyncTask)
    assert dj.flaky.get_result(result.id) == fetched
    with pytest.raises(TaskResultMismatch):
        dj.noop_task.get_result(result.id)
    assert refreshed(result) == fetched  # refresh() reads the same


@pytest.mark.django_db
def test_a_result_reads_each_state_of_its_job() -> None:
    result = dj.always_fails.using(priority=3).enqueue("x")
    assert result.status == TaskResultStatus.READY
    assert result.task == dj.always_fails.using(priority=3)

    attempt = _claim("tester:1:abc")
    running = default_task_backend.get_result(result.id)
    assert running.status == TaskResultStatus.RUNNING
    assert running.worker_ids == ["tester:1:abc"]
    assert running.started_at == running.last_attempted_at == attempt.started
    assert running.finished_at is None
    with pytest.raises(ValueError, match="Task has not finished yet"):
        _ = running.return_value
    assert running.task == dj.always_fails.using(priority=3)  # as enqueued, whatever the job's priority now

    # The attempt fails and the job is requeued, as the store writes it: an Error row, a record.
    Job.objects.filter(pk=result.id).update(status=Status.QUEUED, locked_by="", priority=2)
    Error.objects.create(
        job_id=result.id, attempt=1, exception="ValueError", traceback="...", worker="tester:1:abc"
    )
    AttemptRecord.objects.create(
        job_id=result.id, number=1, started=attempt.started, worker="tester:1:abc", outcome="retried"
    )
    retrying = default_task_backend.get_result(result.id)
    assert retrying.status == TaskResultStatus.READY
    assert retrying.worker_ids == ["tester:1:abc"]
    assert [error.exception_class for error in retrying.errors] == [ValueError]
    assert retrying.task.priority == 3

    # A failed job keeps its last worker in locked_by; its attempt is listed once.
    Job.objects.filter(pk=result.id).update(
        status=Status.FAILED, locked_by="tester:1:abc", finished=timezone.now()
    )
    failed = default_task_backend.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.worker_ids == ["tester:1:abc"]
    with pytest.raises(ValueError, match="Task failed"):
        _ = failed.return_value


@pytest.mark.django_db
def test_worker_ids_name_the_worker_of_every_attempt_given_back_ones_too() -> None:
    result = dj.noop_task.enqueue()
    first = _claim("tester:1:abc")
    with transaction.atomic():
        dialect = for_vendor(connection.vendor)
        assert run_on(connection, release(dialect, first, "tester:1:abc", timezone.now()))
    _claim("tester:2:def")
    running = default_task_backend.get_result(result.id)
    assert running.worker_ids == ["tester:1:abc", "tester:2:def"]
    assert running.attempts == 2
    assert running.started_at == first.started


@pytest.mark.django_db
def test_aio_async_errors_read_as_task_errors() -> None:
    result = dj.noop_task.enqueue()
    Error.objects.create(
        job_id=result.id,
        attempt=1,
        exception="aio_async.errors.WorkerLost",
        message="worker w stopped renewing its lease",
        worker="w",
    )
    (error,) = default_task_backend.get_result(result.id).errors
    assert error.exception_class.__name__ == "WorkerLost"
    assert error.traceback == "aio_async.errors.WorkerLost: worker w stopped renewing its lease\n"


@pytest.mark.django_db
def test_a_cancelled_job_reads_failed_with_job_cancelled_last() -> None:
    result = dj.write_record.enqueue("cancel me")
    assert deschedule(dj.write_record.module_path, ["cancel me"]) == 1
    cancelled = default_task_backend.get_result(result.id)
    assert cancelled.status == TaskResultStatus.FAILED
    assert cancelled.is_finished is True
    assert cancelled.finished_at is not None
    assert cancelled.worker_ids == []
    (error,) = cancelled.errors
    assert error.exception_class is JobCancelled
    assert error.exception_class_path == "aio_async.errors.JobCancelled"
    assert "cancelled by deschedule() before it ran" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = cancelled.return_value

    # Cancelled while waiting for a retry: its attempts' errors first, then the cancellation.
    retried = dj.always_fails.enqueue("y")
    testing.drain()  # one attempt; the retry waits out its back-off
    assert deschedule(dj.always_fails.module_path, ["y"]) == 1
    errors = default_task_backend.get_result(retried.id).errors
    assert [error.exception_class for error in errors] == [ValueError, JobCancelled]


@pytest.mark.skipif(not PICKLES, reason="Django 6.1 pickles Tasks and TaskResults")
def test_a_result_pickles_to_an_equal_result(run_all: Callable[[], object]) -> None:
    pending = dj.flaky.enqueue("k", 2)
    assert pickle.loads(pickle.dumps(pending)) == pending
    run_all()
    finished = default_task_backend.get_result(pending.id)
    copy = pickle.loads(pickle.dumps(finished))
    assert copy == finished
    assert copy.return_value == finished.return_value
    assert copy.errors == finished.errors
    assert pickle.loads(pickle.dumps(dj.flaky.using(max_attempts=2))) == dj.flaky.using(max_attempts=2)


@pytest.mark.django_db
def test_unknown_ids_and_jobs_of_other_callables_are_no_results() -> None:
    job = schedule(tasks.add, [1, 2])
    with pytest.raises(TaskResultDoesNotExist, match="not a task of Django's Tasks framework"):
        default_task_backend.get_result(str(job.pk))
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(job.pk + 1000))


@pytest.mark.django_db
def test_a_result_outlives_a_change_of_settings() -> None:
    result = dj.on_other_queue.enqueue()
    with override_settings(TASKS={"default": {"BACKEND": BACKEND, "QUEUES": ["default"]}}):
        assert default_task_backend.get_result(result.id).task.queue_name == "other"


# Deferral, priority and queues --------------------------------------------------------------


@pytest.mark.django_db
def test_run_after_takes_a_timedelta_from_now() -> None:
    later = dj.write_record.using(run_after=datetime.timedelta(hours=1))  # type: ignore[arg-type]  # AioAsyncTask takes one
    assert later.run_after == datetime.timedelta(hours=1)
    before = timezone.now()
    result = later.enqueue("later")
    job = Job.objects.get()
    assert (
        before + datetime.timedelta(hours=1) <= job.run_after <= timezone.now() + datetime.timedelta(hours=1)
    )
    assert job.meta[TASK_KEY]["run_after"] == {"days": 0, "seconds": 3600, "microseconds": 0}
    assert default_task_backend.get_result(result.id).task == later
    assert testing.drain() == {}
    assert testing.drain(with_scheduled=True) == {"succeeded": 1}
    assert refreshed(result).status == TaskResultStatus.SUCCESSFUL


@pytest.mark.django_db
def test_run_after_must_be_aware_and_nothing_is_written_when_validation_fails() -> None:
    when = timezone.now() + datetime.timedelta(minutes=5)
    result = dj.noop_task.using(run_after=when).enqueue()
    assert Job.objects.get().run_after == when
    assert default_task_backend.get_result(result.id).task.run_after == when
    Job.objects.all().delete()
    bad: list[Callable[[], object]] = [
        lambda: dj.noop_task.using(run_after=datetime.datetime(2030, 1, 1)).enqueue(),
        lambda: dj.noop_task.using(priority=101).enqueue(),
        lambda: dj.noop_task.using(priority=-101).enqueue(),
        lambda: dj.noop_task.using(queue_name="x" * 300).enqueue(),
        lambda: dj.noop_task.using(max_attempts=0).enqueue(),  # type: ignore[call-arg]
        lambda: dj.noop_task.using(timeout=-1).enqueue(),  # type: ignore[call-arg]
    ]
    messages = [
        "run_after must be an aware datetime.",
        "priority must be a whole number between -100 and 100.",
        "priority must be a whole number between -100 and 100.",
        "queue must be a non-empty string of at most 255 characters",
        "max_attempts must be an integer from 1 to 1000",
        "timeout must be a positive number of seconds",
    ]
    for make, message in zip(bad, messages, strict=True):
        with pytest.raises(InvalidTask) as raised:
            make()
        assert message in str(raised.value)
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_arguments_that_are_not_json_raise_as_django_does_and_write_nothing() -> None:
    with pytest.raises(TypeError, match="Unsupported type"):
        dj.noop_task.enqueue(object())
    with pytest.raises(TypeError, match="Unsupported type"):
        dj.noop_task.enqueue(when=timezone.now())
    with pytest.raises(InvalidArguments, match=r"NaN|nan"):
        dj.noop_task.enqueue(float("nan"))  # normalize_json lets NaN through; the database cannot
    with pytest.raises(
        InvalidArguments, match=r"do not fit tests\.app\.django_tasks\.flaky\(key: 'str', succeed_on: 'int'\)"
    ):
        dj.flaky.enqueue("k")  # the signature checked is the task's, without its context
    assert not Job.objects.exists()
    result = dj.noop_task.enqueue(b"bytes", (1, 2), key={"a": (3,)})
    assert result.args == ["bytes", [1, 2]]
    assert Job.objects.get().kwargs == {"key": {"a": [3]}}


@pytest.mark.django_db(transaction=True)
async def test_enqueue_from_async_code_says_to_await_aenqueue() -> None:
    with pytest.raises(SynchronousOnlyOperation, match=r"use `await aenqueue\(\.\.\.\)`"):
        dj.noop_task.enqueue()
    await dj.noop_task.aenqueue()
    assert await Job.objects.acount() == 1


@pytest.mark.django_db
def test_priority_maps_to_the_jobs_and_higher_runs_first() -> None:
    dj.write_record.using(priority=-5).enqueue("low")
    dj.write_record.using(priority=50).enqueue("high")
    dj.write_record.enqueue("default")
    assert sorted(Job.objects.values_list("priority", flat=True)) == [-5, 0, 50]
    testing.drain()
    assert list(Record.objects.order_by("pk").values_list("key", flat=True)) == ["high", "default", "low"]


@pytest.mark.django_db
def test_a_tasks_queue_is_its_jobs_and_the_check_names_unserved_queues() -> None:
    result = dj.on_other_queue.enqueue()
    assert Job.objects.get().queue == "other"
    assert testing.drain() == {}
    assert testing.drain(queues=("other",)) == {"succeeded": 1}
    assert refreshed(result).return_value == "other"
    with override_settings(TASKS={"default": {"BACKEND": BACKEND, "QUEUES": ["default", "other"]}}):
        (warning,) = task_backends["default"].check()
        assert warning.id == "aio_async.W010"
        assert "'other'" in warning.msg
    with override_settings(
        TASKS={"default": {"BACKEND": BACKEND, "QUEUES": ["default", "other"]}}, AIO_ASYNC={"QUEUES": ["*"]}
    ):
        assert task_backends["default"].check() == []


# Options -----------------------------------------------------------------------------------


@pytest.mark.skipif(not dj.DECORATOR_OPTIONS, reason="Django 6.1 passes @task()'s keywords to task_class")
@pytest.mark.django_db
def test_options_of_the_task_decorator_become_the_jobs() -> None:
    assert (dj.flaky.max_attempts, dj.flaky.timeout) == (3, None)
    assert (dj.too_slow_sync.max_attempts, dj.too_slow_sync.timeout) == (1, 0.3)
    dj.flaky.enqueue("k", 1)
    dj.too_slow_sync.enqueue(0)
    assert sorted(Job.objects.values_list("max_attempts", "timeout")) == [(1, 0.3), (3, None)]


@pytest.mark.django_db
def test_options_of_using_then_the_backends_options_then_aio_async_settings() -> None:
    dj.noop_task.using(max_attempts=7, timeout=9).enqueue()  # type: ignore[call-arg]
    assert Job.objects.values_list("max_attempts", "timeout").get() == (7, 9.0)
    Job.objects.all().delete()
    dj.noop_task.enqueue()
    assert Job.objects.values_list("max_attempts", "timeout").get() == (5, None)  # AIO_ASYNC["MAX_ATTEMPTS"]
    Job.objects.all().delete()
    options = {"MAX_ATTEMPTS": 4, "TIMEOUT": 60}
    with override_settings(TASKS={"default": {"BACKEND": BACKEND, "QUEUES": [], "OPTIONS": options}}):
        dj.noop_task.enqueue()
        dj.flaky.enqueue("k", 1)
    assert sorted(Job.objects.values_list("name", "max_attempts", "timeout")) == [
        ("tests.app.django_tasks.flaky", 3, 60.0),  # the task's own max_attempts wins
        ("tests.app.django_tasks.noop_task", 4, 60.0),
    ]


@pytest.mark.django_db
def test_a_task_made_for_another_backend_is_refused() -> None:
    tasks_setting = {
        "default": {"BACKEND": BACKEND, "QUEUES": []},
        "immediate": {"BACKEND": IMMEDIATE_BACKEND},
    }
    with override_settings(TASKS=tasks_setting):
        plain = task(backend="immediate")(tasks.add)
        with pytest.raises(InvalidTask, match=r"declare it with @task\(backend='default'\)"):
            plain.using(backend="default")
    assert not Job.objects.exists()


# What the job is --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_job_is_named_by_the_tasks_module_path() -> None:
    dj.noop_task.enqueue(1)
    job = Job.objects.get()
    assert job.name == dj.noop_task.module_path == "tests.app.django_tasks.noop_task"
    assert job.meta == {
        TASK_KEY: {"alias": "default", "backend": "default", "priority": 0, "queue_name": "default"}
    }
    assert "tests.app.django_tasks.noop_task" in health()["by_name"]


def test_return_values_are_normalised_as_django_does(run_all: Callable[[], object]) -> None:
    normalised = dj.returns_tuple.enqueue()
    nan = dj.returns_nan.enqueue()
    run_all()
    assert refreshed(normalised).return_value == [1, "two"]
    assert refreshed(nan).status == TaskResultStatus.FAILED
    assert nan.errors[0].exception_class is ResultNotJSON


def test_keyboard_interrupt_fails_the_task_and_the_worker_carries_on(run_all: Callable[[], object]) -> None:
    interrupted = dj.keyboard_interrupt.enqueue()
    after = dj.write_record.enqueue("after")
    run_all()
    assert refreshed(interrupted).status == TaskResultStatus.FAILED
    assert interrupted.errors[0].exception_class is KeyboardInterrupt
    assert refreshed(after).status == TaskResultStatus.SUCCESSFUL


# aio_async.testing -------------------------------------------------------------------------


@pytest.mark.django_db
def test_assert_enqueued_finds_a_job_by_any_name_of_its_task_and_the_criteria_given() -> None:
    dj.write_record.enqueue("a", value=1)
    tasks.decorated.schedule(["b"])
    schedule(tasks.add, [1, 2], priority=9)
    job = testing.assert_enqueued(
        dj.write_record, args=["a"], kwargs={"value": 1}, queue="default", priority=0
    )
    assert job.name == "tests.app.django_tasks.write_record"
    testing.assert_enqueued(dj.write_record)
    testing.assert_enqueued("tests.app.django_tasks.write_record", args=("a",))
    testing.assert_enqueued(tasks.decorated, args=["b"], queue="tasks")
    testing.assert_enqueued(tasks.add, args=[1, 2], priority=9)
    testing.refute_enqueued(dj.write_record, args=["b"])
    testing.refute_enqueued(tasks.add, priority=5)
    testing.refute_enqueued(dj.noop_task)
    assert [job.name for job in testing.enqueued_jobs(tasks.add)] == ["tests.app.tasks.add"]


@pytest.mark.django_db
def test_assert_enqueued_says_what_is_enqueued() -> None:
    with pytest.raises(
        AssertionError,
        match=r"Expected a job of tests\.app\.tasks\.add to be enqueued; none is\. Nothing is enqueued\.",
    ):
        testing.assert_enqueued(tasks.add)
    schedule(tasks.add, [1, 3])
    dj.noop_task.enqueue()
    with pytest.raises(AssertionError) as raised:
        testing.assert_enqueued(tasks.add, args=[1, 2])
    message = str(raised.value)
    assert (
        "Expected a job of tests.app.tasks.add with args=[1, 2] to be enqueued; none is. Enqueued (2):"
        in message
    )
    assert "tests.app.tasks.add(1, 3) queue='default' priority=5 status=queued" in message
    assert "tests.app.django_tasks.noop_task() queue='default' priority=0" in message
    with pytest.raises(
        AssertionError,
        match=(
            r"Expected no job of tests\.app\.tasks\.add with args=\[1, 3\] to be enqueued; found 1:\n"
            r"  #\d+ tests\.app\.tasks\.add\(1, 3\)"
        ),
    ):
        testing.refute_enqueued(tasks.add, args=[1, 3])
    testing.drain()
    testing.refute_enqueued(tasks.add)  # it ran: no longer enqueued


@pytest.mark.django_db
def test_drain_runs_in_the_tests_transaction_and_runs_what_the_jobs_commit_would(sent: list[Sent]) -> None:
    before = dj.write_record.enqueue("run_jobs")
    assert testing.run_jobs() == {"succeeded": 1}
    # run_jobs() leaves each job's on_commit callbacks to a commit that never comes, as it
    # leaves the enqueue's task_enqueued.
    assert [s.signal for s in sent if s.id == before.id] == ["started"]
    sent.clear()
    transaction.on_commit(lambda: Record.objects.create(key="the test's own"))
    result = dj.write_record.enqueue("drain")
    schedule(tasks.add, [1, 2])
    assert testing.drain() == {"succeeded": 2}
    assert [s.signal for s in sent] == ["started", "finished"]
    assert refreshed(result).status == TaskResultStatus.SUCCESSFUL
    assert not Record.objects.filter(key="the test's own").exists()  # the test's callback waits its turn


@pytest.mark.django_db
def test_drain_with_scheduled_runs_retries_until_the_last_attempt() -> None:
    result = dj.always_fails.enqueue("x")
    assert testing.drain() == {"retrying": 1}
    assert refreshed(result).status == TaskResultStatus.READY
    assert testing.drain(with_scheduled=True) == {"failed": 1}
    assert refreshed(result).status == TaskResultStatus.FAILED
    assert len(result.errors) == 2


# Unique jobs and limits, as a Task's options ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_unique_task_enqueued_twice_makes_one_job_and_returns_its_result() -> None:
    received: list[str] = []

    def enqueued(sender: object, task_result: Any, **kwargs: Any) -> None:
        received.append(task_result.id)

    task_enqueued.connect(enqueued)
    try:
        first = dj.rebuild_report.enqueue(7)
        again = dj.rebuild_report.enqueue(7)
        other = dj.rebuild_report.enqueue(8)
    finally:
        task_enqueued.disconnect(enqueued)
    assert again.id == first.id != other.id
    assert received == [first.id, other.id]  # nothing was enqueued the second time
    assert cast(AioAsyncTask, again.task).unique is True
    assert again.status == TaskResultStatus.READY
    assert sorted(Job.objects.values_list("limit_key", "concurrency_limit")) == [("reports", 2)] * 2
    assert drain() == {Outcome.SUCCEEDED: 2}
    assert dj.rebuild_report.enqueue(7).id not in (first.id, other.id)  # it ran: its key is free


@pytest.mark.django_db
def test_using_sets_the_unique_and_limit_options_of_one_call() -> None:
    record = cast(AioAsyncTask, dj.write_record)  # the stubs know Django's Task only
    debounced = record.using(unique_key="latest", on_conflict="replace", rate="10/s")
    first = debounced.enqueue("a", 1)
    last = debounced.enqueue("b", 2)
    assert last.id == first.id
    job = Job.objects.get()
    assert (job.args, job.limit_key, job.rate_count, job.rate_period) == (
        ["b", 2],
        "task:" + job.name,
        10,
        1.0,
    )
    # The result's task has the options it was enqueued with.
    enqueued = cast(AioAsyncTask, record.get_result(first.id).task)
    assert (enqueued.unique_key, enqueued.on_conflict, enqueued.rate) == ("latest", "replace", "10/s")
    assert record.using(unique=True, unique_states=["queued", "running"]).unique_states == (
        "queued",
        "running",
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique_for": 60}, "apply to unique jobs only|applies to unique jobs only"),
        ({"unique": True, "on_conflict": "merge"}, "on_conflict must be one of"),
        ({"rate": "fast"}, "rate"),
        ({"concurrency_limit": 0}, "concurrency_limit"),
    ],
)
def test_bad_unique_or_limit_options_are_refused_before_anything_is_written(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidTask, match=message):
        dj.write_record.using(**options)
    assert not Job.objects.exists()


def test_a_queue_the_backend_does_not_list_is_refused_with_the_fix() -> None:
    # Django's default QUEUES, ["default"]
    with override_settings(TASKS={"default": {"BACKEND": BACKEND}}), pytest.raises(InvalidTask) as refused:
        task(queue_name="emails")(tasks.add)
    assert str(refused.value) == (
        "Queue 'emails' is not valid for backend 'default' (tests.app.tasks.add): list it in "
        "TASKS['default']['QUEUES'] (now ['default']; Django's default is ['default'], and [] "
        "allows every queue)"
    )


@pytest.mark.django_db(transaction=True)
def test_task_enqueued_is_sent_once_its_enqueue_commits_and_never_for_one_rolled_back(
    sent: list[Sent],
) -> None:
    with pytest.raises(_Rollback), transaction.atomic():
        dj.write_record.enqueue("never")
        raise _Rollback
    assert sent == []  # its result id never existed
    with transaction.atomic():
        committed = dj.write_record.enqueue("committed")
        assert sent == []  # not before the commit
    assert [(s.signal, s.id) for s in sent] == [("enqueued", committed.id)]
    sent.clear()
    alone = dj.write_record.enqueue("autocommit")  # no transaction: sent at once
    assert [(s.signal, s.id, s.status) for s in sent] == [("enqueued", alone.id, "READY")]


@pytest.mark.django_db(transaction=True)
def test_a_django_task_outside_the_installed_apps_is_refused_at_enqueue() -> None:
    from aio_async import TaskNotImported
    from tests import outside_django_tasks

    with pytest.raises(TaskNotImported) as refused:
        outside_django_tasks.outside_task.enqueue("a")
    message = str(refused.value)
    assert "tests.outside_django_tasks.outside_task is a task of module tests.outside_django_tasks" in message
    assert "`tasks` module of an app in INSTALLED_APPS" in message
    assert "add 'tests.outside_django_tasks' to AIO_ASYNC['ALLOWED_MODULES']" in message
    assert not Job.objects.exists()
    allowing = {"ALLOWED_MODULES": ["tests.app", "tests.outside_django_tasks"]}
    with override_settings(AIO_ASYNC={**settings.AIO_ASYNC, **allowing}):
        result = outside_django_tasks.outside_task.enqueue("b")
        drain()
    assert refreshed(result).status == TaskResultStatus.SUCCESSFUL
    assert Record.objects.get().key == "b"
