"""Tasks of Django's Tasks framework (``django.tasks``), run by aio_async's backend.

The first group ports the tasks of Django's own ``tests/tasks/tasks.py`` (for the conformance
module); the second serves ``tests/integration/test_backend.py``. Not named ``tasks.py``, so
that the app's autodiscovery never imports it: on Django 5.2 without the backport it would
not import.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aio_async
from aio_async import current_job
from aio_async.backends import AioAsyncTask
from tests.app.models import Record

# The Tasks framework's names, from Django or (on Django 5.2) the backport, for the tests too.
if TYPE_CHECKING:
    from django.tasks import (
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django.tasks.exceptions import (
        InvalidTask,
        InvalidTaskBackend,
        TaskResultDoesNotExist,
        TaskResultMismatch,
    )
    from django.tasks.signals import task_enqueued, task_finished, task_started

    #: The logger of the framework's signal receivers, and the path of its immediate backend.
    LOGGER = "django.tasks"
    IMMEDIATE_BACKEND = "django.tasks.backends.immediate.ImmediateBackend"
else:
    try:
        from django.tasks import (
            Task,
            TaskContext,
            TaskResult,
            TaskResultStatus,
            default_task_backend,
            task,
            task_backends,
        )
        from django.tasks.exceptions import (
            InvalidTask,
            InvalidTaskBackend,
            TaskResultDoesNotExist,
            TaskResultMismatch,
        )
        from django.tasks.signals import task_enqueued, task_finished, task_started

        LOGGER = "django.tasks"
        IMMEDIATE_BACKEND = "django.tasks.backends.immediate.ImmediateBackend"
    except ImportError:  # Django 5.2 with the backport
        from django_tasks import (
            TaskContext,
            TaskResult,
            TaskResultStatus,
            default_task_backend,
            task,
            task_backends,
        )
        from django_tasks.base import Task
        from django_tasks.exceptions import InvalidTaskBackendError as InvalidTaskBackend
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
        from django_tasks.signals import task_enqueued, task_finished, task_started

        LOGGER = "django_tasks"
        IMMEDIATE_BACKEND = "django_tasks.backends.immediate.ImmediateBackend"

__all__ = [
    "IMMEDIATE_BACKEND",
    "LOGGER",
    "InvalidTask",
    "InvalidTaskBackend",
    "Task",
    "TaskContext",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "default_task_backend",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]

#: Django 6.1 passes the decorator's extra keywords (aio_async's options) to ``task_class``.
DECORATOR_OPTIONS = any(
    parameter.kind is inspect.Parameter.VAR_KEYWORD
    for parameter in inspect.signature(task).parameters.values()
)


def aio_task(
    *, takes_context: bool = False, queue_name: str = "default", **options: Any
) -> Callable[[Callable[..., Any]], AioAsyncTask]:
    """``@task(max_attempts=..., timeout=...)``: through the decorator where Django takes them
    (6.1), else through ``.using()``."""

    # django-stubs type task() without 6.1's keywords, and takes_context as a literal.
    decorator: Any = task

    def decorate(function: Callable[..., Any]) -> AioAsyncTask:
        if DECORATOR_OPTIONS:
            made = decorator(takes_context=takes_context, queue_name=queue_name, **options)(function)
        else:
            made = decorator(takes_context=takes_context, queue_name=queue_name)(function).using(**options)
        assert isinstance(made, AioAsyncTask)
        return made

    return decorate


# Django's own test tasks -----------------------------------------------------------------


@task()
def noop_task(*args: Any, **kwargs: Any) -> None:
    """Do nothing."""
    return None


@task
def noop_task_from_bare_decorator(*args: Any, **kwargs: Any) -> None:
    """Do nothing (decorated without parentheses)."""
    return None


@task()
async def noop_task_async(*args: Any, **kwargs: Any) -> None:
    """Do nothing, as a coroutine."""
    return None


@task()
def calculate_meaning_of_life() -> int:
    """Return 42."""
    return 42


@task()
def failing_task_value_error() -> None:
    """Raise ValueError."""
    raise ValueError("This task failed due to ValueError")


@task()
def failing_task_system_exit() -> None:
    """Raise SystemExit."""
    raise SystemExit("This task failed due to SystemExit")


@task()
def failing_task_keyboard_interrupt() -> None:
    """Raise KeyboardInterrupt."""
    raise KeyboardInterrupt("This task failed due to KeyboardInterrupt")


@task()
def complex_exception() -> None:
    """Raise an exception whose argument is an exception."""
    raise ValueError(ValueError("This task failed"))


@task()
def complex_return_value() -> Any:
    """Return a value JSON cannot hold."""
    return {"value": object()}


@task()
def exit_task() -> None:
    """Call exit()."""
    sys.exit(1)


@task(takes_context=True)
def get_task_id(context: TaskContext[Any, Any]) -> str:
    """Return the task's result id, read from its context."""
    return context.task_result.id


@task(takes_context=True)
def context_attempt(context: TaskContext[Any, Any], attempt: int) -> None:
    """Check the context and its attempt (Django's ``test_context`` task)."""
    assert isinstance(context, TaskContext)
    assert context.attempt == attempt


# Tasks of aio_async's backend tests --------------------------------------------------------


@task()
def write_record(key: str, value: int = 0) -> int:
    """Write a Record and return its id."""
    return Record.objects.create(key=key, value=value).pk


@task()
async def awrite_record(key: str) -> int:
    """Write a Record through the async ORM."""
    record = await Record.objects.acreate(key=key)
    return record.pk


@aio_task(takes_context=True, max_attempts=3)
def flaky(context: TaskContext[Any, Any], key: str, succeed_on: int) -> dict[str, Any]:
    """Write a Record, then fail until attempt ``succeed_on`` (the Record rolls back each time)."""
    Record.objects.create(key=key, value=context.attempt)
    if context.attempt < succeed_on:
        raise RuntimeError(f"attempt {context.attempt} fails")
    job = current_job()
    return {"attempt": context.attempt, "job_attempt": job.attempt, "workers": context.task_result.worker_ids}


@aio_task(takes_context=True, max_attempts=3)
async def aflaky(context: TaskContext[Any, Any], succeed_on: int) -> int:
    """flaky as a coroutine."""
    await asyncio.sleep(0)
    if context.attempt < succeed_on:
        raise RuntimeError(f"attempt {context.attempt} fails")
    return context.attempt


@aio_task(max_attempts=2)
def always_fails(key: str) -> None:
    """Write a Record, then raise."""
    Record.objects.create(key=key)
    raise ValueError(f"{key} always fails")


@aio_task(max_attempts=1, timeout=0.3)
async def too_slow_coroutine(seconds: float) -> None:
    """Sleep past the timeout."""
    await asyncio.sleep(seconds)


@aio_task(max_attempts=1, timeout=0.3)
def too_slow_sync(seconds: float) -> None:
    """Block past the timeout."""
    time.sleep(seconds)


@task(queue_name="other")
def on_other_queue() -> str:
    """A task whose queue is not ``default``."""
    return "other"


@aio_task(max_attempts=1)
def keyboard_interrupt() -> None:
    """Raise KeyboardInterrupt inside a worker."""
    raise KeyboardInterrupt("raised by the task")


@aio_task(max_attempts=1)
def returns_nan() -> float:
    """Return NaN: Django's normalize_json accepts it, aio_async's JSON check does not."""
    return float("nan")


@task()
def returns_tuple() -> tuple[int, bytes]:
    """Return what Django normalises (a tuple, bytes) into JSON."""
    return (1, b"two")


@aio_task(unique=True, concurrency_limit=2, concurrency_key="reports")
def rebuild_report(shop: int) -> int:
    """A unique task (the call is the key), two at a time under the key ``reports``."""
    return shop


def _write(key: str) -> int:
    return Record.objects.create(key=key).pk


@aio_task(max_attempts=1)
def stepped(key: str, event: str) -> list[Any]:
    """A step, a wait for ``event``, a step: on its only attempt, the wait is no failure."""
    first = aio_async.step("one", _write, f"{key}-1")
    payload = aio_async.wait_for("approval", event)
    return [first, payload, aio_async.step("two", _write, f"{key}-2")]


@aio_task(max_attempts=1)
async def astepped(key: str, event: str) -> list[Any]:
    """``stepped`` as a coroutine."""
    first = await aio_async.astep("one", _write, f"{key}-1")
    payload = await aio_async.await_for("approval", event)
    return [first, payload, await aio_async.astep("two", _write, f"{key}-2")]


@aio_task(max_attempts=3)
def waits_briefly(event: str) -> Any:
    """A wait that times out: the task fails for good at once, attempts left or not."""
    return aio_async.wait_for("approval", event, timeout=0.1)
