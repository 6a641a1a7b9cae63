"""Helpers for a project's own test suite.

- ``run_jobs()`` runs every due job now, in the test's thread and transaction, through the
  worker's own executor: the same claims (jobs with limits too), the same runner, the same
  signals and the same records of every end as ``python -m aio_async run``.
- ``drain()`` does the same and then, as a commit would, runs the ``on_commit`` callbacks of
  each job that succeeded (inside a test's transaction nothing ever commits): so Django's
  ``task_finished`` signal is sent for sync tasks of ``django.tasks`` too.
- ``assert_enqueued()`` / ``refute_enqueued()`` check what waits in the queue, comparing only
  the criteria given, and say what *is* enqueued when they fail.
- ``clear_queue()`` deletes every job, error and group.
- ``in_memory()`` keeps the queue in memory instead: code that schedules jobs, and the jobs
  themselves, run in tests that have no database for the queue (``MemoryQueue``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from aio_async import allow
from aio_async.api import Task
from aio_async.bridge import JobThread
from aio_async.conf import EVERY_QUEUE, QueueSettings, get_settings
from aio_async.executor import Executor
from aio_async.models import Error, Group, Job, Status
from aio_async.payload import JSONError, json_value
from aio_async.store import journal, memory, operations
from aio_async.store.database import DatabaseStore
from aio_async.store.drivers.django import DjangoConnector
from aio_async.store.memory import MemoryQueue
from aio_async.store.protocol import Store
from aio_async.values import Attempt, Checkpoint, ClaimRequest, ErrorInfo, Outcome

__all__ = [
    "MemoryQueue",
    "assert_enqueued",
    "clear_queue",
    "drain",
    "enqueued_jobs",
    "in_memory",
    "refute_enqueued",
    "run_jobs",
]

WORKER_ID = "aio_async.testing"
#: Jobs that wait to run: what "enqueued" means to assert_enqueued() and refute_enqueued().
PENDING = (Status.WAITING, Status.QUEUED)
#: Jobs listed at most in an assertion's message.
LISTED = 20

logger = logging.getLogger("aio_async.testing")


class _InlineJobs:
    """Runs a sync job's attempt in the calling thread, on its connection and in its transaction."""

    def __init__(self, store: _InlineStore, settings: QueueSettings) -> None:
        self.store = store
        thread = JobThread(store.alias, WORKER_ID, settings)
        self._thread = sync_to_async(thread.run, thread_sensitive=True)
        self._step = sync_to_async(thread.run_step, thread_sensitive=True)

    async def run(
        self, attempt: Attempt, call: Callable[[], Any], returned: Callable[[], None]
    ) -> tuple[Outcome, ErrorInfo | None]:
        """Run the attempt as a worker's job thread would, then settle its ``on_commit`` callbacks."""
        outcome, error = await self._thread(attempt, call, returned)
        await self.store.settle_callbacks(outcome)
        return outcome, error

    async def run_step(
        self, attempt: Attempt, point: Checkpoint, call: Callable[[], Any]
    ) -> tuple[bool, Any]:
        """Run a coroutine job's sync step as a worker's job thread would."""
        return await self._step(attempt, point, call)

    async def close(self) -> None:
        """Nothing to close: the connection is the caller's."""


class _InlineStore(DatabaseStore):
    """The worker's store, run in the calling thread: the caller's connection and transaction.

    Everything else is the worker's own: the same claims (jobs with limits too), the same
    attempt runner and signals, the same records of every end. With ``drain``, the
    ``on_commit`` callbacks a job registered run as its commit would run them (inside a test's
    transaction nothing commits), and a failed job's are dropped.
    """

    def __init__(self, settings: QueueSettings, alias: str, *, drain: bool, with_scheduled: bool) -> None:
        queues = () if EVERY_QUEUE in settings.queues else settings.queues
        request = ClaimRequest(WORKER_ID, queues, datetime.timedelta(seconds=settings.lease_seconds))
        self.alias = alias
        self.drain = drain
        self.with_scheduled = with_scheduled
        self._mark = 0
        super().__init__(settings, request, DjangoConnector(alias), _InlineJobs(self, settings), 1)
        self.frontier = None  # tests see the strict order of a full claim

    async def check(self) -> list[str]:
        """Nothing to check: the caller's database is set up."""
        return []

    async def register(self, started: datetime.datetime) -> None:
        """Not recorded among the workers."""

    async def unregister(self) -> None:
        """Not recorded among the workers."""

    async def claim(
        self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset(), thorough: bool = False
    ) -> list[Attempt]:
        """Claim as a worker does, jobs due later first made due when ``with_scheduled``."""
        if self.with_scheduled:
            now = timezone.now()
            await self.connector.run(lambda dialect: operations.make_due(dialect, self.request.queues, now))
            await self.connector.run(lambda dialect: journal.end_sleeps(self.request.queues, now))
        return await self._marked(await super().claim(limit, alone=alone, paused=paused, thorough=thorough))

    async def claim_limited(
        self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset()
    ) -> list[Attempt]:
        """Claim jobs with limits as a worker does."""
        return await self._marked(await super().claim_limited(limit, alone=alone, paused=paused))

    async def _marked(self, attempts: list[Attempt]) -> list[Attempt]:
        """Note where the claimed job's ``on_commit`` callbacks will begin (on the caller's thread)."""
        if attempts and self.drain:
            self._mark = await sync_to_async(self._callbacks, thread_sensitive=True)()
        return attempts

    def _callbacks(self) -> int:
        return len(connections[self.alias].run_on_commit)

    async def complete(self, attempt: Attempt, result: Any) -> Outcome:
        """Record a coroutine job's success, then settle its callbacks."""
        outcome = await super().complete(attempt, result)
        await self.settle_callbacks(outcome)
        return outcome

    async def fail(
        self, attempt: Attempt, error: ErrorInfo, *, final: bool = False, cause: BaseException | None = None
    ) -> Outcome:
        """Record a coroutine job's failure, then drop its callbacks."""
        outcome = await super().fail(attempt, error, final=final, cause=cause)
        await self.settle_callbacks(outcome)
        return outcome

    async def settle_callbacks(self, outcome: Outcome) -> None:
        """Run (on success) or drop the ``on_commit`` callbacks the attempt registered, with ``drain``."""
        if self.drain:
            await sync_to_async(self._settle_callbacks, thread_sensitive=True)(outcome is Outcome.SUCCEEDED)

    def _settle_callbacks(self, succeeded: bool) -> None:
        connection = connections[self.alias]
        if not connection.in_atomic_block:
            return  # committed: Django ran them
        if succeeded:
            _run_new_callbacks(connection, self._mark)
        else:
            del connection.run_on_commit[self._mark :]

    async def close(self) -> None:
        """Finish pending records; the connection stays the caller's."""
        await self._completions.finish()


def _run(
    *,
    queues: tuple[str, ...] | None,
    using: str | None,
    limit: int,
    drain: bool,
    with_scheduled: bool = False,
) -> dict[str, int]:
    """Run due jobs through the worker's own executor, one at a time, in this thread."""
    settings = get_settings()
    alias = using or settings.database
    settings = dataclasses.replace(settings, database=alias, concurrency=1, queues=queues or settings.queues)
    store: Store
    if (queue := memory.active()) is not None:
        queue.settings = settings
        queue.make_due_first = with_scheduled
        store = queue
    else:
        store = _InlineStore(settings, alias, drain=drain, with_scheduled=with_scheduled)
    executor = Executor(settings, WORKER_ID, max_jobs=limit, store=store, schedules=[], announce=False)
    outcomes = async_to_sync(executor.run)(until_empty=True)
    return {outcome.value: count for outcome, count in outcomes.items()}


def run_jobs(
    *, queues: tuple[str, ...] | None = None, using: str | None = None, limit: int = 10_000
) -> dict[str, int]:
    """Run every due job now, one at a time in this thread; return the outcomes counted.

    Jobs run on the calling thread's connection, so they see the data of a test that runs
    inside a transaction (pytest-django's ``db``, Django's ``TestCase``); a coroutine job runs
    on an event loop of its own, its queries on this thread. Jobs that other jobs schedule,
    and retries that are already due, run too; ``limit`` stops a job that reschedules itself
    forever.
    """
    return _run(queues=queues, using=using, limit=limit, drain=False)


def drain(
    *,
    queues: tuple[str, ...] | None = None,
    using: str | None = None,
    with_scheduled: bool = False,
    limit: int = 10_000,
) -> dict[str, int]:
    """Run what is due, as ``run_jobs()`` does, then each succeeded job's ``on_commit`` callbacks.

    Inside a test's transaction (pytest-django's ``db``, Django's ``TestCase``) a job's
    transaction is a savepoint that never commits, so the callbacks it registered (Django's
    ``task_finished`` for a sync task among them) would never run: they run here, as its
    commit would run them; a failed job's are discarded with its rollback. With
    ``with_scheduled``, jobs due later (retries in their back-off, ``run_after`` in the
    future, durable sleeps) are made due first, so that a task that fails runs until its last
    attempt and a job that sleeps runs to its end.
    Works for aio_async's own jobs and for ``django.tasks`` tasks alike; call it from sync
    code.
    """
    return _run(queues=queues, using=using, limit=limit, drain=True, with_scheduled=with_scheduled)


def _run_new_callbacks(connection: BaseDatabaseWrapper, start: int) -> None:
    """Run (and forget) the on_commit callbacks registered after the first ``start``."""
    while len(connection.run_on_commit) > start:
        # (savepoint ids, callback, robust): django-stubs still say a pair.
        callbacks: list[Any] = connection.run_on_commit[start:]
        del connection.run_on_commit[start:]
        for _savepoints, callback, robust in callbacks:
            if not robust:
                callback()
                continue
            try:
                callback()
            except Exception:
                logger.exception("An on_commit callback of a drained job raised")


def _task_name(task: object) -> str:
    """The job name of a django.tasks Task, an aio_async Task, a function or a dotted path."""
    if isinstance(task, str):
        return allow.check_name(task)
    if isinstance(task, Task):
        return task.name
    module_path = getattr(task, "module_path", None)
    if isinstance(module_path, str) and hasattr(task, "func"):  # a django.tasks Task
        return module_path
    if callable(task):
        return allow.dotted_name(task)
    raise TypeError(f"expected a task, a function or a dotted path, got {task!r:.80}")


def enqueued_jobs(task: object = None, *, using: str | None = None) -> list[Job]:
    """The jobs that wait to run (queued, or waiting for their group), of ``task`` if given."""
    if (queue := memory.active()) is not None:
        name = None if task is None else _task_name(task)
        return [job for job in queue.jobs if job.status in PENDING and name in (None, job.name)]
    jobs = Job.objects.using(using or get_settings().database).filter(status__in=PENDING)
    if task is not None:
        jobs = jobs.filter(name=_task_name(task))
    return list(jobs.order_by("added", "id"))


def _criteria(
    args: Sequence[Any] | None, kwargs: dict[str, Any] | None, queue: str | None, priority: int | None
) -> dict[str, Any]:
    criteria: dict[str, Any] = {}
    try:
        if args is not None:
            criteria["args"] = json_value(list(args), "args")
        if kwargs is not None:
            criteria["kwargs"] = json_value(dict(kwargs), "kwargs")
    except JSONError as exc:
        raise TypeError(f"{exc}: no job can hold it") from None
    if queue is not None:
        criteria["queue"] = queue
    if priority is not None:
        criteria["priority"] = priority
    return criteria


def _matches(job: Job, criteria: dict[str, Any]) -> bool:
    return all(getattr(job, key) == value for key, value in criteria.items())


def _describe(name: str, criteria: dict[str, Any]) -> str:
    said = ", ".join(f"{key}={value!r}" for key, value in criteria.items())
    return f"a job of {name}" + (f" with {said}" if said else "")


def _listing(jobs: list[Job]) -> str:
    lines = [
        f"  #{job.pk} {job} queue={job.queue!r} priority={job.priority} status={job.status} "
        f"run_after={job.run_after.isoformat()}"
        for job in jobs[:LISTED]
    ]
    if len(jobs) > LISTED:
        lines.append(f"  ... and {len(jobs) - LISTED} more")
    return "\n".join(lines)


def assert_enqueued(
    task: object,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    *,
    using: str | None = None,
) -> Job:
    """Assert a job of ``task`` waits to run, matching the criteria given; return the first.

    ``task``: a ``django.tasks`` Task, an aio_async Task, a function or a dotted path. Only
    the criteria that are not ``None`` are compared (``args=[]`` is a criterion); arguments
    are compared as they are stored, as JSON (tuples as lists). The message of a failure
    lists the jobs that are enqueued.
    """
    name = _task_name(task)
    criteria = _criteria(args, kwargs, queue, priority)
    pending = enqueued_jobs(using=using)
    for job in pending:
        if job.name == name and _matches(job, criteria):
            return job
    found = f"Enqueued ({len(pending)}):\n{_listing(pending)}" if pending else "Nothing is enqueued."
    raise AssertionError(f"Expected {_describe(name, criteria)} to be enqueued; none is. {found}")


def refute_enqueued(
    task: object,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    *,
    using: str | None = None,
) -> None:
    """Assert no job of ``task`` matching the criteria given waits to run (see ``assert_enqueued``)."""
    name = _task_name(task)
    criteria = _criteria(args, kwargs, queue, priority)
    matching = [job for job in enqueued_jobs(name, using=using) if _matches(job, criteria)]
    if matching:
        raise AssertionError(
            f"Expected no {_describe(name, criteria)[2:]} to be enqueued; found {len(matching)}:\n"
            f"{_listing(matching)}"
        )


@contextlib.contextmanager
def in_memory() -> Iterator[MemoryQueue]:
    """Keep the queue in memory while the block runs: no database is needed to schedule and run jobs.

    ``schedule()``, ``schedule_many()``, a task's ``.schedule()``, ``cancel()``, ``retry()``,
    ``deschedule()`` and Django's ``enqueue()`` put and change jobs in the queue it yields;
    ``run_jobs()``, ``drain()`` and the ``assert_enqueued()`` family work on it. It keeps the
    database's rules (unique keys, ``after=``, retries by the back-off) and leaves out
    transactions (a job is queued as soon as it is scheduled), groups, and concurrency and rate
    limits (jobs run one at a time). The queue's ``jobs`` are the ``Job`` instances, with their
    ids, statuses and results; ``errors(job)`` lists a job's failed attempts.
    """
    queue = MemoryQueue(get_settings())
    with memory.using(queue):
        yield queue


def clear_queue(*, using: str | None = None) -> int:
    """Delete every job, error and group; return how many jobs there were."""
    alias = using or get_settings().database
    with transaction.atomic(using=alias):
        count = Job.objects.using(alias).count()
        Error.objects.using(alias).all().delete()
        Group.objects.using(alias).update(final=None)
        Job.objects.using(alias).all().delete()
        Group.objects.using(alias).all().delete()
    return count
