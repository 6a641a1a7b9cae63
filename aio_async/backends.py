"""aio_async as a backend of Django's Tasks framework: ``django.tasks`` (Django 6), or the
``django_tasks`` backport on Django 5.2.

    TASKS = {"default": {"BACKEND": "aio_async.backends.AioAsyncBackend"}}

A task enqueued through it is an aio_async job, written by ``aio_async.schedule()``: the same
tables, the same worker, the same promises. The enqueue joins the caller's transaction (roll
back and the job never existed), and a sync task's database work commits together with its
completion.

How a Django task runs on the worker: each task (an ``AioAsyncTask``, the backend's
``task_class``) registers a *runner* under its module path with ``aio_async.allow.register``,
so the worker finds it as it finds an ``@aio_async.task``. The runner builds the
``TaskResult`` of the attempt (from ``current_job()`` and one read of the job's row), sends
``task_started``, calls the function (with a ``TaskContext`` first for ``takes_context``
tasks), normalises its return value as Django does, and sends ``task_finished`` once the job
reaches a final state: after the job's transaction commits on success (sync tasks; after the
call for coroutine tasks), and, on failure, only from the last attempt (or a wait's timeout,
which fails the job at once), inside the exception handler. A retried attempt sends
``task_started`` again and no ``task_finished``; so does an attempt that a durable sleep or a
wait for an event suspended (the one that resumes the job sends ``task_started`` again).

How a job reads as a ``TaskResult``: waiting and queued are READY, running and suspended
(in a durable sleep or a wait for an event, between its steps) are RUNNING,
succeeded is SUCCESSFUL, failed and cancelled are FAILED (a cancelled job's errors end with
``JobCancelled``). ``errors`` are the job's Error rows, oldest first; ``worker_ids`` has the
worker of every attempt, oldest first (``Job.attempt_history()``: retried, lost, timed out,
snoozed and released attempts too), so ``attempts`` (and a ``TaskContext``'s ``attempt``)
counts every attempt that started. ``started_at`` is when the first attempt started,
``last_attempted_at`` when the latest one did.

What a job's ``meta`` holds: the task's options as enqueued, under ``_task`` (keys that start
with ``_`` are aio_async's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import inspect
import logging
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar, Unpack, cast

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.core import checks
from django.utils import timezone

from aio_async import allow, signals, steps
from aio_async.api import not_in_async_code, schedule
from aio_async.conf import EVERY_QUEUE, get_settings
from aio_async.context import JobContext, current_job
from aio_async.errors import EventTimeout, InvalidOption, JobCancelled, ScheduleError
from aio_async.models import AttemptRecord, Error, Job, Status
from aio_async.payload import (
    JobOptions,
    Limits,
    TaskOptions,
    UniqueOptions,
    check_max_attempts,
    check_option_names,
    check_queue,
    check_timeout,
    result_value,
)
from aio_async.store import memory
from aio_async.values import class_path

if TYPE_CHECKING:
    from django.dispatch import Signal
    from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    _TaskBase: TypeAlias = Task[..., Any]
else:
    try:  # Django 6.0 and newer
        from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus, task_backends
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import TaskError
        from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
        from django.tasks.signals import task_enqueued, task_finished, task_started
        from django.utils.json import normalize_json
    except ImportError:
        try:  # Django 5.2 with the backport
            from django_tasks import task_backends
            from django_tasks.backends.base import BaseTaskBackend
            from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
            from django_tasks.exceptions import InvalidTaskBackendError as InvalidTaskBackend
            from django_tasks.exceptions import InvalidTaskError as InvalidTask
            from django_tasks.exceptions import TaskResultDoesNotExist
            from django_tasks.signals import task_enqueued, task_finished, task_started
            from django_tasks.utils import normalize_json
        except ImportError as exc:
            raise ImportError(
                "aio_async.backends needs Django's Tasks framework: Django 6.0 or newer, or on "
                "Django 5.2 the django-tasks backport: pip install 'aio_async[tasks]'"
            ) from exc
    _TaskBase = Task

__all__ = ["TASK_KEY", "AioAsyncBackend", "AioAsyncTask", "JobCancelled"]

logger = logging.getLogger("aio_async.backends")

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: The key of aio_async's own entry in a job's ``meta``: the task's options as enqueued.
TASK_KEY = "_task"
#: Backend ``OPTIONS``: defaults for the tasks that do not set them.
OPTION_KEYS = ("MAX_ATTEMPTS", "TIMEOUT")
#: Job ids are 64-bit; a larger number names no job (and must not reach the database).
_MAX_ID = 2**63 - 1

_STATUS: dict[str, TaskResultStatus] = {
    Status.WAITING: TaskResultStatus.READY,
    Status.QUEUED: TaskResultStatus.READY,
    Status.RUNNING: TaskResultStatus.RUNNING,
    # A suspended task started and is not done: it sleeps or waits between its steps, which
    # have run. READY would say it has not started; Django has no status for a pause.
    Status.SUSPENDED: TaskResultStatus.RUNNING,
    Status.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    Status.FAILED: TaskResultStatus.FAILED,
    Status.CANCELLED: TaskResultStatus.FAILED,
}


def _first(value: Any, default: Any) -> Any:
    return default if value is None else value


# The task ----------------------------------------------------------------------------------


#: aio_async's own options of a Task: a job's options (``JobOptions``) but its queue, which is
#: Django's ``queue_name``.
JOB_OPTIONS = tuple(name for name in JobOptions.__annotations__ if name != "queue")
#: The keywords of Django's ``Task.using()``.
_DJANGO_USING = ("priority", "queue_name", "run_after", "backend")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AioAsyncTask(_TaskBase):
    """A Django ``Task`` that runs on aio_async, with aio_async's options; registered to run.

    The options of ``schedule()`` in ``JOB_OPTIONS`` (``max_attempts``, ``timeout``, unique
    jobs and limits) come from ``@task(max_attempts=3, unique=True)`` on Django 6.1 (which
    passes the decorator's extra keywords to ``task_class``), or from ``.using(...)``;
    ``None`` leaves them to the backend's ``OPTIONS``, then to ``AIO_ASYNC``.
    """

    max_attempts: int | None = None
    timeout: float | None = None
    unique: bool | None = None
    unique_key: str | None = None
    unique_for: datetime.timedelta | float | None = None
    unique_states: tuple[str, ...] | None = None
    on_conflict: str | None = None
    concurrency_key: str | Callable[..., str] | None = None
    concurrency_limit: int | None = None
    rate: str | None = None

    def __post_init__(self) -> None:
        """Validate through the backend (as every Task does), then register the task to run."""
        _TaskBase.__post_init__(self)  # zero-argument super() does not work in a slots dataclass
        _register(self)

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime.datetime | datetime.timedelta | None = None,
        backend: str | None = None,
        **options: Unpack[JobOptions],
    ) -> AioAsyncTask:
        """A copy with other defaults: Django's, and aio_async's options (``JOB_OPTIONS``)."""
        check_option_names(options, _USING_NAMES, f"{self.module_path}.using()")
        # A timedelta run_after passes through as it is: validate_task() accepts it (from now,
        # when enqueued).
        ours: dict[str, Any] = {name: value for name, value in options.items() if value is not None}
        if "unique_states" in ours and not isinstance(ours["unique_states"], str):
            ours["unique_states"] = tuple(ours["unique_states"])
        task: AioAsyncTask = _TaskBase.using(  # type: ignore[assignment]
            self,
            priority=priority,
            queue_name=queue_name,
            run_after=run_after,  # type: ignore[arg-type]  # a timedelta too, see validate_task()
            backend=backend,
        )
        if not ours:
            return task
        return dataclasses.replace(task, **ours)  # validated again, by Task.__post_init__

    def job_options(self) -> JobOptions:
        """The options ``schedule()`` takes, as this task sets them (``None``: not set)."""
        return JobOptions(
            queue=self.queue_name,
            max_attempts=self.max_attempts,
            timeout=self.timeout,
            unique=self.unique,
            unique_key=self.unique_key,
            unique_for=self.unique_for,
            unique_states=self.unique_states,
            on_conflict=self.on_conflict,
            concurrency_key=self.concurrency_key,
            concurrency_limit=self.concurrency_limit,
            rate=self.rate,
        )


#: What ``AioAsyncTask.using()`` takes.
_USING_NAMES = frozenset((*_DJANGO_USING, *JOB_OPTIONS))


#: The first Task created for each function (the module-level one), by module path.
_tasks: dict[str, _TaskBase] = {}


def _register(task: _TaskBase) -> None:
    """Allow the worker to run ``task`` under its module path (once per function)."""
    name = task.module_path
    known = _tasks.get(name)
    if known is not None and known.func is task.func:
        return
    _tasks[name] = task
    options = TaskOptions(
        queue=task.queue_name,
        max_attempts=getattr(task, "max_attempts", None),
        timeout=getattr(task, "timeout", None),
    )
    allow.register(name, _runner(task), options)


def _runner(task: _TaskBase) -> Callable[..., Any]:
    """What the worker calls with the job's arguments: a sync or ``async def`` function."""
    func = task.func
    signature = inspect.signature(func)
    if task.takes_context:  # the worker passes the job's arguments; the context is the runner's
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])

    async def run_coroutine(*args: Any, **kwargs: Any) -> Any:
        return await _run_coroutine(task, list(args), kwargs)

    def run_sync(*args: Any, **kwargs: Any) -> Any:
        return _run_sync(task, list(args), kwargs)

    run: Callable[..., Any] = run_coroutine if iscoroutinefunction(func) else run_sync
    run.__signature__ = signature  # type: ignore[attr-defined]  # schedule() checks calls against it
    run.__module__ = func.__module__
    run.__name__ = func.__name__
    run.__qualname__ = func.__qualname__
    run.__doc__ = func.__doc__
    return run


# One attempt, as Django's signals and TaskContext see it -----------------------------------


@dataclasses.dataclass
class _Attempt:
    """The running attempt's TaskResult, who sends its signals, and when it must be done by."""

    result: TaskResult[..., Any]
    sender: type[BaseTaskBackend]
    deadline: datetime.datetime | None

    def overran(self) -> bool:
        """True once the job's timeout has passed: the worker fails (or has failed) the attempt."""
        return self.deadline is not None and timezone.now() > self.deadline

    def succeeded(self, value: Any) -> None:
        """Mark the result successful, with its return value."""
        object.__setattr__(self.result, "finished_at", timezone.now())
        object.__setattr__(self.result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(self.result, "_return_value", value)

    def failed(self, exc: BaseException) -> None:
        """Mark the result failed by ``exc``, the last of its errors."""
        self.result.errors.append(
            TaskError(
                exception_class_path=class_path(type(exc)),
                traceback="".join(traceback.format_exception(exc)),
            )
        )
        object.__setattr__(self.result, "finished_at", timezone.now())
        object.__setattr__(self.result, "status", TaskResultStatus.FAILED)

    def send(self, signal: Signal) -> None:
        """Send ``signal`` for this attempt; a receiver's error is logged, never the job's."""
        signal.send_robust(self.sender, task_result=self.result)

    def send_failure(self, exc: BaseException) -> None:
        """Mark the result failed and send ``task_finished`` with ``exc`` being handled.

        Django's receiver logs ``sys.exc_info()``: a coroutine task's failure is sent from
        another thread than the one that caught it, so it is raised there again (its
        traceback kept as it was).
        """
        self.failed(exc)
        kept = exc.__traceback__
        try:
            raise exc
        except BaseException:  # noqa: BLE001 - it is exc itself, raised to be handled here
            self.send(task_finished)
        finally:
            exc.__traceback__ = kept


def _backend_class(alias: str) -> type[BaseTaskBackend]:
    try:
        return type(task_backends[alias])
    except Exception:  # noqa: BLE001 - an alias since removed from TASKS: still signal something
        return AioAsyncBackend


def _job_and_errors(job_id: int, *, with_errors: bool = True) -> tuple[Job | None, list[Error]]:
    """The job and its Error rows, oldest first: from the database, or from the queue in memory."""
    if (queue := memory.active()) is not None:
        found = next((job for job in queue.jobs if job.pk == job_id), None)
        if found is None or not with_errors:
            return found, []
        return found, [
            Error(
                job_id=job_id,
                attempt=number,
                exception=error.exception,
                message=error.message,
                traceback=error.traceback,
                worker=queue.worker_id,
            )
            for number, error in enumerate(queue.errors(found), start=1)
        ]
    alias = get_settings().database
    job = Job.objects.using(alias).filter(pk=job_id).first()
    if job is None or not with_errors:
        return job, []
    return job, list(Error.objects.using(alias).filter(job_id=job_id).order_by("attempt", "id"))


def _history(job: Job | None, errors: list[Error]) -> list[AttemptRecord]:
    """The job's attempts, oldest first; in the queue in memory, one per Error row and the last one."""
    if job is None:
        return []
    if memory.active() is None:
        return job.attempt_history()
    records = [AttemptRecord(number=error.attempt, worker=error.worker) for error in errors if error.worker]
    if job.status in (Status.RUNNING, Status.SUCCEEDED) and job.locked_by:
        records.append(AttemptRecord(number=job.attempts, worker=job.locked_by, started=job.started))
    return records


def _start(task: _TaskBase, job: JobContext, args: list[Any], kwargs: dict[str, Any]) -> _Attempt:
    """Read the job's row (and, after a first attempt, its errors); send ``task_started``."""
    row, errors = _job_and_errors(job.job_id, with_errors=job.attempt > 1)
    added, meta, timeout = (row.added, row.meta, row.timeout) if row is not None else (None, {}, None)
    earlier = (
        [record for record in _history(row, errors) if record.number < job.attempt] if job.attempt > 1 else []
    )
    first = earlier[0].started if earlier and earlier[0].started is not None else job.started
    spec = _spec_of(meta)
    result: TaskResult[..., Any] = TaskResult(
        task=_rebuilt(task, spec),
        id=str(job.job_id),
        status=TaskResultStatus.RUNNING,
        enqueued_at=added,
        started_at=first,
        finished_at=None,
        last_attempted_at=job.started,
        args=args,
        kwargs=kwargs,
        backend=str(spec.get("alias", task.backend)),
        errors=[_task_error(error) for error in errors],
        worker_ids=[*(record.worker for record in earlier), job.worker_id],
    )
    deadline = None
    if timeout is not None and job.started is not None:
        deadline = job.started + datetime.timedelta(seconds=timeout)
    attempt = _Attempt(result, _backend_class(result.backend), deadline)
    attempt.send(task_started)
    return attempt


def _arguments(task: _TaskBase, attempt: _Attempt, args: list[Any]) -> list[Any]:
    return [TaskContext(task_result=attempt.result), *args] if task.takes_context else args


def _returned(value: Any) -> Any:
    """The task's return value as Django normalises it (TypeError for what JSON cannot hold),
    then as aio_async stores it (ResultNotJSON for NaN, non-string keys ...)."""
    return result_value(normalize_json(value))


def _fails_for_good(job: JobContext, exc: BaseException) -> bool:
    """Whether ``exc`` ends the task failed: on its last attempt, or a wait's timeout (never retried)."""
    return job.last_attempt or isinstance(exc, EventTimeout)


def _run_sync(task: _TaskBase, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """A sync task's attempt, in the worker's job thread, inside the job's transaction."""
    job = current_job()
    attempt = _start(task, job, args, kwargs)
    try:
        value = _returned(task.func(*_arguments(task, attempt, args), **kwargs))
        if attempt.overran():
            # The worker has failed this attempt already; say so here too, where it is seen.
            raise TimeoutError(f"the task ran past its timeout (due by {attempt.deadline})")
    except steps.Stopped:
        raise  # suspended (a durable sleep or wait), or its lease lost: the task goes on elsewhere
    except BaseException as exc:
        if _fails_for_good(job, exc):
            attempt.failed(exc)
            attempt.send(task_finished)  # inside the handler: Django's receiver logs exc_info
        raise
    attempt.succeeded(value)
    signals.on_commit(functools.partial(attempt.send, task_finished), get_settings().database, robust=True)
    return value


async def _run_coroutine(task: _TaskBase, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """A coroutine task's attempt, on the worker's loop; signals go through Django's async ORM
    thread, where sync receivers may use the ORM."""
    job = current_job()
    attempt = await sync_to_async(_start, thread_sensitive=True)(task, job, args, kwargs)
    try:
        value = _returned(await task.func(*_arguments(task, attempt, args), **kwargs))
    except asyncio.CancelledError:
        # Cancelled at its timeout (a failure, charged) or by a stopping worker (given back):
        # only the first, on the last attempt, finishes the task.
        if job.last_attempt and attempt.overran():
            timed_out = TimeoutError(f"the task ran past its timeout (due by {attempt.deadline})")
            await sync_to_async(attempt.send_failure, thread_sensitive=True)(timed_out)
        raise
    except steps.Stopped:
        raise
    except BaseException as exc:
        if _fails_for_good(job, exc):
            await sync_to_async(attempt.send_failure, thread_sensitive=True)(exc)
        raise
    attempt.succeeded(value)
    await sync_to_async(attempt.send, thread_sensitive=True)(task_finished)
    return value


# Results -------------------------------------------------------------------------------------


def _spec(alias: str, task: _TaskBase) -> dict[str, Any]:
    """The task's options as stored in the job's meta, to rebuild the same Task later."""
    spec: dict[str, Any] = {
        "alias": alias,
        "backend": task.backend,
        "priority": task.priority,
        "queue_name": task.queue_name,
    }
    run_after: object = task.run_after
    if isinstance(run_after, datetime.datetime):
        spec["run_after"] = run_after.isoformat()
    elif isinstance(run_after, datetime.timedelta):
        spec["run_after"] = {
            "days": run_after.days,
            "seconds": run_after.seconds,
            "microseconds": run_after.microseconds,
        }
    for option in JOB_OPTIONS:
        value = getattr(task, option, None)
        if isinstance(value, datetime.timedelta):
            value = value.total_seconds()
        elif isinstance(value, tuple):
            value = list(value)
        if value is not None and not callable(value):
            spec[option] = value
    return spec


def _spec_of(meta: object) -> dict[str, Any]:
    spec = meta.get(TASK_KEY) if isinstance(meta, dict) else None
    return spec if isinstance(spec, dict) else {}


def _rebuilt(base: _TaskBase, spec: Mapping[str, Any]) -> _TaskBase:
    """``base`` with the options of ``spec``, made without validating it again.

    A result must be readable even after the settings changed (a queue since removed, say),
    so the Task is put together field by field rather than through ``replace()``.
    """
    changes = dict(spec)
    run_after = changes.get("run_after")
    if isinstance(run_after, str):
        changes["run_after"] = datetime.datetime.fromisoformat(run_after)
    elif isinstance(run_after, dict):
        changes["run_after"] = datetime.timedelta(**run_after)
    if isinstance(changes.get("unique_states"), list):
        changes["unique_states"] = tuple(changes["unique_states"])
    rebuilt = object.__new__(type(base))
    for field in dataclasses.fields(base):
        object.__setattr__(rebuilt, field.name, changes.get(field.name, getattr(base, field.name)))
    return rebuilt


def _task_error(error: Error) -> TaskError:
    """An Error row as Django's TaskError: an importable class path, and a traceback."""
    path = error.exception if "." in error.exception else f"builtins.{error.exception}"
    # aio_async's own errors (a lost worker, a refused row) have a message and no traceback.
    text = error.traceback or f"{path}: {error.message}\n"
    return TaskError(exception_class_path=path, traceback=text)


def _job_id(result_id: object) -> int:
    text = str(result_id)
    if not (text.isascii() and text.isdigit()) or int(text) > _MAX_ID:
        raise TaskResultDoesNotExist(result_id)
    return int(text)


# The backend ---------------------------------------------------------------------------------


class AioAsyncBackend(BaseTaskBackend):
    """Django's Tasks API on aio_async: tasks are jobs in your database, run by its workers.

    ``OPTIONS``: ``MAX_ATTEMPTS`` and ``TIMEOUT``, the defaults for tasks that set neither.
    """

    task_class = AioAsyncTask

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        """Read ``QUEUES`` and ``OPTIONS``; unknown or invalid options are refused."""
        super().__init__(alias, params)
        unknown = sorted(set(self.options) - set(OPTION_KEYS))
        if unknown:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown key(s) {', '.join(map(repr, unknown))} "
                f"for aio_async; it takes {', '.join(OPTION_KEYS)}"
            )
        try:
            self.max_attempts = (
                None
                if self.options.get("MAX_ATTEMPTS") is None
                else check_max_attempts(self.options["MAX_ATTEMPTS"])
            )
            self.timeout = check_timeout(self.options.get("TIMEOUT"))
        except ScheduleError as exc:
            raise InvalidTaskBackend(f"TASKS[{alias!r}]['OPTIONS']: {exc}") from None

    def validate_task(self, task: _TaskBase) -> None:
        """Django's checks (a ``timedelta`` ``run_after`` counts as aware), then aio_async's."""
        run_after: object = task.run_after
        if self.queues and task.queue_name not in self.queues:
            # Django's rule, with the fix: its default QUEUES holds "default" only.
            raise InvalidTask(
                f"Queue '{task.queue_name}' is not valid for backend {self.alias!r} ({task.module_path}): "
                f"list it in TASKS[{self.alias!r}]['QUEUES'] (now {sorted(self.queues)}; Django's "
                "default is ['default'], and [] allows every queue)"
            )
        if isinstance(run_after, datetime.timedelta):
            super().validate_task(_rebuilt(task, {"run_after": None}))
        else:
            super().validate_task(task)
        if not isinstance(task, AioAsyncTask):
            raise InvalidTask(
                f"{task.module_path} was made by {type(task).__name__}, which aio_async's worker cannot "
                f"find: declare it with @task(backend={self.alias!r}) so that it is an AioAsyncTask"
            )
        try:
            check_queue(task.queue_name)
            if task.max_attempts is not None:
                check_max_attempts(task.max_attempts)
            check_timeout(task.timeout)
            options = task.job_options()
            UniqueOptions.of(options).rule()
            Limits.of(options)
        except ScheduleError as exc:
            raise InvalidTask(f"{task.module_path}: {exc}") from None

    def enqueue(self, task: Task[_P, _R], args: Any, kwargs: Any) -> TaskResult[_P, _R]:
        """Write the task's job through ``aio_async.schedule()``, inside the caller's transaction."""
        not_in_async_code("enqueue")  # says: use `await aenqueue(...)`
        self.validate_task(task)
        # What Django's TaskResult would raise for arguments that are not JSON, before any write.
        job_args = normalize_json(list(args))
        job_kwargs = normalize_json(dict(kwargs))
        options = cast(AioAsyncTask, task).job_options()  # validate_task: an AioAsyncTask
        options["max_attempts"] = _first(options.get("max_attempts"), self.max_attempts)
        options["timeout"] = _first(options.get("timeout"), self.timeout)
        try:
            job = schedule(
                task.module_path,
                job_args,  # type: ignore[arg-type]  # normalize_json of a list is a list
                job_kwargs,  # type: ignore[arg-type]  # and of a dict, a dict
                priority=task.priority,
                run_after=task.run_after,
                meta={TASK_KEY: _spec(self.alias, task)},
                **options,
            )
        except InvalidOption as exc:  # what only the arguments tell: a key made from them, say
            raise InvalidTask(f"{task.module_path}: {exc}") from None
        if job.unique_conflict:
            # Nothing was enqueued: the result is that of the job holding the key.
            return self.get_result(str(job.pk))  # type: ignore[return-value]  # the same task's
        result: TaskResult[_P, _R] = TaskResult(
            task=task,
            id=str(job.pk),
            status=TaskResultStatus.READY,
            enqueued_at=job.added,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=job.args,
            kwargs=job.kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        # As job_scheduled: a result whose job rolls back never existed (now, outside a transaction).
        signals.on_commit(
            functools.partial(task_enqueued.send, type(self), task_result=result), get_settings().database
        )
        return result

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        """The job's state as a TaskResult; TaskResultDoesNotExist for an unknown id."""
        job, errors = _job_and_errors(_job_id(result_id))
        if job is None:
            raise TaskResultDoesNotExist(result_id)
        return self._result(job, errors)

    def _result(self, job: Job, errors: list[Error]) -> TaskResult[..., Any]:
        base = _tasks.get(job.name)
        if base is None:
            with contextlib.suppress(ScheduleError):  # its module is not imported yet: import it
                allow.resolve(job.name)
            base = _tasks.get(job.name)
        if base is None:
            raise TaskResultDoesNotExist(
                f"job {job.pk} runs {job.name}, which is not a task of Django's Tasks framework"
            )
        spec = _spec_of(job.meta)
        task_errors = [_task_error(error) for error in errors]
        path = class_path(JobCancelled)
        if job.status == Status.CANCELLED and not any(error.exception == path for error in errors):
            # cancelled by an earlier release, which wrote no Error row for a cancellation
            task_errors.append(
                TaskError(
                    exception_class_path=path,
                    traceback=f"{path}: job {job.pk} was cancelled at {job.finished} before it could run\n",
                )
            )
        history = _history(job, errors)
        worker_ids = [record.worker for record in history]
        first = history[0].started if history and history[0].started is not None else job.started
        result: TaskResult[..., Any] = TaskResult(
            task=_rebuilt(base, spec),
            id=str(job.pk),
            status=_STATUS.get(job.status, TaskResultStatus.FAILED),
            enqueued_at=job.added,
            started_at=first,
            finished_at=job.finished,
            last_attempted_at=job.started,
            args=job.args,
            kwargs=job.kwargs,
            backend=str(spec.get("alias", self.alias)),
            errors=task_errors,
            worker_ids=worker_ids,
        )
        if job.status == Status.SUCCEEDED:
            object.__setattr__(result, "_return_value", job.result)
        return result

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """Warn about TASKS queues that no worker serves under ``AIO_ASYNC['QUEUES']``."""
        try:
            served = get_settings().queues
        except Exception:  # noqa: BLE001 - aio_async.E001 reports a bad AIO_ASYNC
            return []
        unserved = sorted(self.queues - set(served)) if EVERY_QUEUE not in served else []
        if not unserved:
            return []
        return [
            checks.Warning(
                f"TASKS[{self.alias!r}] accepts queue(s) {', '.join(map(repr, unserved))}, which "
                f"AIO_ASYNC['QUEUES'] ({list(served)}) does not serve: their tasks wait for a worker "
                f"started with --queue",
                id="aio_async.W010",
            )
        ]
