"""Django's own scenarios for a Tasks backend, run against AioAsyncBackend with a worker.

Ported from Django's ``tests/tasks/test_immediate_backend.py`` and ``test_custom_backend.py``
(the task functions are in ``tests.app.django_tasks``). Django 6.1.3, installed here, has no
task metadata API, so ``test_metadata.py`` has nothing to run against.

The immediate backend runs a task inside ``enqueue()``; aio_async runs it in a worker. Where
a scenario checks that enqueue ran the task, its intent is ported instead: enqueue, run the
worker until nothing is due, refresh the result, then check; each such place says
"intent:". Each scenario runs with two workers (the ``run_worker`` fixture):

- ``worker``: ``tests.conftest.drain()``, a real ``Executor`` with its own connections and
  threads, on committed data (a transactional test);
- ``test_thread``: ``aio_async.testing.drain()``, the jobs run in the test's thread, inside
  its transaction (``on_commit`` callbacks run as the job's commit would run them).

Like the immediate backend, which never retries, the backend here makes one attempt
(``OPTIONS: {"MAX_ATTEMPTS": 1}``); retries are covered by ``test_backend.py``.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from aio_async import testing
from aio_async.backends import AioAsyncBackend
from aio_async.models import Job
from tests.app import django_tasks as test_tasks
from tests.app.django_tasks import (
    LOGGER,
    InvalidTask,
    InvalidTaskBackend,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    task_backends,
)
from tests.conftest import adrain, drain

BACKEND = f"{AioAsyncBackend.__module__}.{AioAsyncBackend.__qualname__}"
TASKS = {"default": {"BACKEND": BACKEND, "QUEUES": [], "OPTIONS": {"MAX_ATTEMPTS": 1}}}


@pytest.fixture(autouse=True)
def _one_attempt_backend() -> Iterator[None]:
    """The backend as Django's immediate-backend tests configure theirs, with one attempt."""
    with override_settings(TASKS=TASKS):
        yield


@pytest.fixture(
    params=[
        pytest.param("worker", marks=pytest.mark.django_db(transaction=True)),
        pytest.param("test_thread", marks=pytest.mark.django_db),
    ]
)
def run_worker(request: pytest.FixtureRequest) -> Callable[[], None]:
    """Run what is due: a real worker on committed data, or the jobs in the test's transaction."""
    return _real_worker if request.param == "worker" else _in_test_thread


def _real_worker() -> None:
    drain()


def _in_test_thread() -> None:
    # First what the commit of the test's enqueues would do: send their task_enqueued.
    while connection.run_on_commit:
        callback = connection.run_on_commit.pop(0)[1]
        callback()
    testing.drain()


def refreshed(result: TaskResult[Any, Any]) -> TaskResult[Any, Any]:
    """``result``, refreshed from the database."""
    result.refresh()
    return result


def _tasks_logs(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[str]:
    """The records of the ``django.tasks`` logger, formatted as assertLogs shows them."""
    formatter = logging.Formatter("%(levelname)s:%(name)s:%(message)s")
    return [
        formatter.format(record)
        for record in caplog.records
        if record.name == LOGGER and record.levelno >= level
    ]


# ImmediateBackendTestCase ------------------------------------------------------------------


@pytest.mark.django_db
def test_using_correct_backend() -> None:
    assert default_task_backend == task_backends["default"]
    assert isinstance(task_backends["default"], AioAsyncBackend)
    assert default_task_backend.alias == "default"
    assert default_task_backend.options == {"MAX_ATTEMPTS": 1}
    for flag in ("supports_defer", "supports_async_task", "supports_get_result", "supports_priority"):
        assert getattr(default_task_backend, flag) is True, flag


@pytest.mark.parametrize("task", [test_tasks.noop_task, test_tasks.noop_task_async], ids=["sync", "async"])
def test_enqueue_task(run_worker: Callable[[], None], task: Any) -> None:
    result = task.enqueue(1, two=3)
    # intent: the immediate backend returns a finished result; here it is READY until run.
    assert result.status == TaskResultStatus.READY
    assert result.is_finished is False
    assert result.enqueued_at is not None
    assert result.started_at is None
    run_worker()
    result.refresh()

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.is_finished is True
    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.finished_at is not None
    assert result.enqueued_at is not None
    assert result.started_at >= result.enqueued_at
    assert result.finished_at >= result.started_at
    assert result.return_value is None
    assert result.task == task
    assert result.args == [1]
    assert result.kwargs == {"two": 3}
    assert result.attempts == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("task", [test_tasks.noop_task, test_tasks.noop_task_async], ids=["sync", "async"])
async def test_enqueue_task_async(task: Any) -> None:
    result = await task.aenqueue()
    await adrain()  # intent: enqueue, then the worker runs it
    await result.arefresh()

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.is_finished is True
    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.finished_at is not None
    assert result.enqueued_at is not None
    assert result.started_at >= result.enqueued_at
    assert result.finished_at >= result.started_at
    assert result.return_value is None
    assert result.task == task
    assert result.args == []
    assert result.kwargs == {}
    assert result.attempts == 1


@pytest.mark.parametrize(
    ("task", "exception", "message"),
    [
        (test_tasks.failing_task_value_error, ValueError, "This task failed due to ValueError"),
        (test_tasks.failing_task_system_exit, SystemExit, "This task failed due to SystemExit"),
    ],
    ids=["ValueError", "SystemExit"],
)
def test_catches_exception(
    run_worker: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
    task: Any,
    exception: type[BaseException],
    message: str,
) -> None:
    result = task.enqueue()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run_worker()  # intent: the failure is caught (and logged once) by the worker, not enqueue
    logs = _tasks_logs(caplog, logging.ERROR)
    assert len(logs) == 1, logs
    assert message in logs[0]
    result.refresh()

    assert result.status == TaskResultStatus.FAILED
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    assert result.is_finished is True
    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.finished_at is not None
    assert result.enqueued_at is not None
    assert result.started_at >= result.enqueued_at
    assert result.finished_at >= result.started_at
    assert result.errors[0].exception_class is exception
    traceback = result.errors[0].traceback
    assert traceback.endswith(f"{exception.__name__}: {message}\n"), traceback
    assert result.task == task
    assert result.args == []
    assert result.kwargs == {}


def test_throws_keyboard_interrupt(run_worker: Callable[[], None], caplog: pytest.LogCaptureFixture) -> None:
    # intent, and a deliberate difference: the immediate backend lets KeyboardInterrupt reach the
    # caller of enqueue(). In a worker it was raised by the task's own code (the worker turns
    # SIGINT into a clean stop, not into a KeyboardInterrupt in a job), so the task fails and
    # the worker carries on with the next job.
    interrupted = default_task_backend.enqueue(test_tasks.failing_task_keyboard_interrupt, [], {})
    after = test_tasks.calculate_meaning_of_life.enqueue()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run_worker()
    interrupted.refresh()
    after.refresh()
    assert interrupted.status == TaskResultStatus.FAILED
    assert interrupted.errors[0].exception_class is KeyboardInterrupt
    assert after.status == TaskResultStatus.SUCCESSFUL
    assert after.return_value == 42
    (log,) = _tasks_logs(caplog, logging.ERROR)
    assert "state=FAILED" in log
    assert "KeyboardInterrupt: This task failed due to KeyboardInterrupt" in log


def test_complex_exception(run_worker: Callable[[], None], caplog: pytest.LogCaptureFixture) -> None:
    result = test_tasks.complex_exception.enqueue()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run_worker()
    assert _tasks_logs(caplog, logging.ERROR)
    result.refresh()

    assert result.status == TaskResultStatus.FAILED
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.finished_at is not None
    assert result.enqueued_at is not None
    assert result.started_at >= result.enqueued_at
    assert result.finished_at >= result.started_at
    assert result._return_value is None  # type: ignore[attr-defined]  # as Django's test reads it
    assert result.errors[0].exception_class is ValueError
    assert 'ValueError(ValueError("This task failed"))' in result.errors[0].traceback
    assert result.task == test_tasks.complex_exception
    assert result.args == []
    assert result.kwargs == {}


def test_complex_return_value(run_worker: Callable[[], None], caplog: pytest.LogCaptureFixture) -> None:
    result = test_tasks.complex_return_value.enqueue()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run_worker()
    assert _tasks_logs(caplog, logging.ERROR)
    result.refresh()

    assert result.status == TaskResultStatus.FAILED
    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.finished_at is not None
    assert result.enqueued_at is not None
    assert result.started_at >= result.enqueued_at
    assert result.finished_at >= result.started_at
    assert result._return_value is None  # type: ignore[attr-defined]  # as Django's test reads it
    assert result.errors[0].exception_class is TypeError
    assert "Unsupported type" in result.errors[0].traceback


def test_result(run_worker: Callable[[], None]) -> None:
    result = default_task_backend.enqueue(test_tasks.calculate_meaning_of_life, [], {})
    run_worker()  # intent
    result.refresh()

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42


@pytest.mark.django_db(transaction=True)
async def test_result_async() -> None:
    result = await default_task_backend.aenqueue(test_tasks.calculate_meaning_of_life, [], {})
    await adrain()  # intent
    await result.arefresh()

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42


#: No job has these ids: a number too large, and text that int() would read but is no id.
UNKNOWN_IDS = ["123456789", 123456789, "abc", "-1", "1.0", " 1", "1_0", "١", str(10**30)]


@pytest.mark.django_db(transaction=True)
async def test_get_result() -> None:
    # intent: test_cannot_get_result, for a backend that supports_get_result.
    result = await default_task_backend.aenqueue(test_tasks.calculate_meaning_of_life, [], {})
    await adrain()
    fetched = await default_task_backend.aget_result(result.id)
    assert fetched.id == result.id
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 42
    assert fetched.task == test_tasks.calculate_meaning_of_life
    assert fetched.enqueued_at == result.enqueued_at
    assert (await test_tasks.calculate_meaning_of_life.aget_result(result.id)).return_value == 42

    for unknown in UNKNOWN_IDS:
        with pytest.raises(TaskResultDoesNotExist):
            await default_task_backend.aget_result(unknown)  # type: ignore[arg-type]  # an int too, as Django's


@pytest.mark.django_db
def test_get_result_of_an_unknown_id() -> None:
    for unknown in UNKNOWN_IDS:
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(unknown)  # type: ignore[arg-type]


def test_refresh_result(run_worker: Callable[[], None]) -> None:
    # intent: test_cannot_refresh_result, for a backend that supports_get_result.
    result = default_task_backend.enqueue(test_tasks.calculate_meaning_of_life, (), {})  # type: ignore[arg-type]
    assert refreshed(result).status == TaskResultStatus.READY
    run_worker()
    assert refreshed(result).status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42


def test_can_pass_run_after(run_worker: Callable[[], None]) -> None:
    # intent: test_cannot_pass_run_after, for a backend that supports_defer.
    default_task_backend.validate_task(test_tasks.failing_task_value_error.using(run_after=timezone.now()))
    later = test_tasks.calculate_meaning_of_life.using(run_after=timezone.now() + datetime.timedelta(hours=1))
    result = later.enqueue()
    run_worker()
    result.refresh()
    assert result.status == TaskResultStatus.READY  # not due yet
    assert result.task.run_after == later.run_after


def test_enqueue_logs(run_worker: Callable[[], None], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        result = test_tasks.noop_task.enqueue()
        run_worker()  # intent: the three state changes, the last two logged by the worker
    logs = _tasks_logs(caplog)
    assert len(logs) == 3, logs
    assert "enqueued" in logs[0]
    assert result.id in logs[0]
    assert "state=RUNNING" in logs[1]
    assert result.id in logs[1]
    assert "state=SUCCESSFUL" in logs[2]
    assert result.id in logs[2]


def test_failed_logs(run_worker: Callable[[], None], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        result = test_tasks.failing_task_value_error.enqueue()
        run_worker()
    logs = _tasks_logs(caplog)
    assert len(logs) == 3, logs
    assert "state=RUNNING" in logs[1]
    assert result.id in logs[1]
    assert "state=FAILED" in logs[2]
    assert result.id in logs[2]


def test_successful_task_no_none_type_in_logs(
    run_worker: Callable[[], None], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        result = test_tasks.noop_task.enqueue()
        run_worker()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    for log_output in _tasks_logs(caplog):
        assert "NoneType" not in log_output


def test_takes_context(run_worker: Callable[[], None]) -> None:
    result = test_tasks.get_task_id.enqueue()
    run_worker()
    result.refresh()
    assert result.return_value == result.id


def test_context(run_worker: Callable[[], None]) -> None:
    result = test_tasks.context_attempt.enqueue(1)
    run_worker()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL


@pytest.mark.django_db
def test_validate_on_enqueue() -> None:
    task_with_custom_queue_name = test_tasks.noop_task.using(queue_name="unknown_queue")
    with (
        override_settings(TASKS={"default": {"BACKEND": BACKEND, "QUEUES": ["queue-1"]}}),
        pytest.raises(InvalidTask, match="Queue 'unknown_queue' is not valid for backend"),
    ):
        task_with_custom_queue_name.enqueue()
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_validate_on_aenqueue() -> None:
    task_with_custom_queue_name = test_tasks.noop_task.using(queue_name="unknown_queue")
    with (
        override_settings(TASKS={"default": {"BACKEND": BACKEND, "QUEUES": ["queue-1"]}}),
        pytest.raises(InvalidTask, match="Queue 'unknown_queue' is not valid for backend"),
    ):
        await task_with_custom_queue_name.aenqueue()
    assert not await Job.objects.aexists()


# ImmediateBackendTransactionTestCase -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_waits_until_transaction_commit() -> None:
    # intent, and the point of aio_async: test_doesnt_wait_until_transaction_commit_by_default
    # pins the immediate backend running the task inside the transaction. Here the job joins
    # the transaction: no worker sees it before the commit (PostgreSQL; on SQLite the open
    # transaction holds the one write lock, so a worker would wait for it instead).
    with transaction.atomic():
        result = test_tasks.noop_task.enqueue()
        assert result.enqueued_at is not None
        assert result.status == TaskResultStatus.READY
        if connection.vendor == "postgresql":
            assert drain() == {}
    assert refreshed(result).status == TaskResultStatus.READY
    drain()
    assert refreshed(result).status == TaskResultStatus.SUCCESSFUL


# CustomBackendTestCase ---------------------------------------------------------------------


@pytest.mark.django_db
def test_custom_backend_options() -> None:
    # intent: test_using_correct_backend and test_options with a backend's OPTIONS. aio_async's
    # backend takes MAX_ATTEMPTS and TIMEOUT, and refuses any other key.
    options = {"MAX_ATTEMPTS": 2, "TIMEOUT": 30}
    with override_settings(TASKS={"default": {"BACKEND": BACKEND, "QUEUES": [], "OPTIONS": options}}):
        assert default_task_backend.options == options
        test_tasks.noop_task.enqueue()
    job = Job.objects.get()
    assert (job.max_attempts, job.timeout) == (2, 30.0)
    with (
        override_settings(TASKS={"default": {"BACKEND": BACKEND, "OPTIONS": {"prefix": "PREFIX: "}}}),
        pytest.raises(InvalidTaskBackend, match=r"unknown key.*'prefix'.*MAX_ATTEMPTS, TIMEOUT"),
    ):
        _ = task_backends["default"]
    with (
        override_settings(TASKS={"default": {"BACKEND": BACKEND, "OPTIONS": {"MAX_ATTEMPTS": 0}}}),
        pytest.raises(InvalidTaskBackend, match="max_attempts must be an integer from 1 to 1000"),
    ):
        _ = task_backends["default"]


@pytest.mark.django_db
def test_enqueue_async_task_on_non_async_backend() -> None:
    with (
        mock.patch.object(AioAsyncBackend, "supports_async_task", False),
        pytest.raises(InvalidTask, match=r"(?i)Backend does not support async Tasks\."),
    ):
        default_task_backend.validate_task(test_tasks.noop_task_async)


@pytest.mark.django_db
def test_backend_does_not_support_priority() -> None:
    with (
        mock.patch.object(AioAsyncBackend, "supports_priority", False),
        pytest.raises(InvalidTask, match=r"Backend does not support setting priority of tasks\."),
    ):
        test_tasks.noop_task.using(priority=10)
    # aio_async does: Django's priority is the job's (higher runs first in both).
    test_tasks.noop_task.using(priority=10).enqueue()
    assert Job.objects.get().priority == 10


def test_no_enqueue() -> None:
    # intent: a backend without enqueue() cannot be made; aio_async's implements every
    # abstract method.
    assert not AioAsyncBackend.__abstractmethods__
