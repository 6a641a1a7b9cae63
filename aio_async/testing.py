"""Helpers for a project's own test suite.

- ``run_jobs()`` runs every due job now, in the test's thread and transaction.
- ``drain()`` does the same and then, as a commit would, runs the ``on_commit`` callbacks of
  each job that succeeded (inside a test's transaction nothing ever commits): so Django's
  ``task_finished`` signal is sent for sync tasks of ``django.tasks`` too.
- ``assert_enqueued()`` / ``refute_enqueued()`` check what waits in the queue, comparing only
  the criteria given, and say what *is* enqueued when they fail.
- ``clear_queue()`` deletes every job, error and group.
"""

from __future__ import annotations

import collections
import datetime
import functools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from asgiref.sync import async_to_sync
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from aio_async import allow, context, operations, sql
from aio_async.bridge import JobThread
from aio_async.conf import EVERY_QUEUE, get_settings
from aio_async.errors import FunctionNotFound, JobRefused
from aio_async.models import Error, Group, Job, Status
from aio_async.operations import ClaimRequest, ErrorInfo
from aio_async.payload import JSONError, json_value

__all__ = ["assert_enqueued", "clear_queue", "drain", "enqueued_jobs", "refute_enqueued", "run_jobs"]

WORKER_ID = "aio_async.testing"
#: Jobs that wait to run: what "enqueued" means to assert_enqueued() and refute_enqueued().
PENDING = (Status.WAITING, Status.QUEUED)
#: Jobs listed at most in an assertion's message.
LISTED = 20

logger = logging.getLogger("aio_async.testing")


def _run_each(
    *, queues: tuple[str, ...] | None, using: str | None, limit: int, with_scheduled: bool = False
) -> Iterator[str]:
    """Run due jobs one at a time in this thread, yielding each attempt's outcome."""
    settings = get_settings()
    alias = using or settings.database
    served = queues or settings.queues
    request = ClaimRequest(
        WORKER_ID, () if EVERY_QUEUE in served else served, datetime.timedelta(seconds=settings.lease_seconds)
    )
    jobs = JobThread(alias, WORKER_ID, settings)
    for _ in range(limit):
        connection = connections[alias]
        now = timezone.now()
        if with_scheduled:
            later = Job.objects.using(alias).filter(status=Status.QUEUED, run_after__gt=now)
            if request.queues:
                later = later.filter(queue__in=request.queues)
            later.update(run_after=now)
        claim = operations.claim(sql.for_vendor(connection.vendor), request, 1, True, now)
        with transaction.atomic(using=alias):
            attempts = sql.run_on(connection, claim)
        if not attempts:
            return
        attempt = attempts[0]
        token = context.enter(attempt.context(WORKER_ID))
        try:
            target, args, kwargs = attempt.resolve()
        except JobRefused as exc:
            final = not isinstance(exc.__cause__, FunctionNotFound)
            outcome = jobs.record_failure(attempt, ErrorInfo.from_exception(exc), final=final)
        else:
            function = async_to_sync(target.function) if target.is_coroutine else target.function
            outcome, _ = jobs.run(attempt, functools.partial(function, *args, **kwargs))
        finally:
            context.reset(token)
        yield outcome.value


def run_jobs(
    *, queues: tuple[str, ...] | None = None, using: str | None = None, limit: int = 10_000
) -> dict[str, int]:
    """Run every due job now, one at a time in this thread; return the outcomes counted.

    Jobs run on the calling thread's connection, so they see the data of a test that runs
    inside a transaction (pytest-django's ``db``, Django's ``TestCase``). A coroutine job is
    run with ``async_to_sync`` inside the job's transaction. Jobs that other jobs schedule,
    and retries that are already due, run too; ``limit`` stops a job that reschedules itself
    forever.
    """
    return dict(collections.Counter(_run_each(queues=queues, using=using, limit=limit)))


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
    future) are made due first, so that a task that fails runs until its last attempt.
    Works for aio_async's own jobs and for ``django.tasks`` tasks alike; call it from sync
    code.
    """
    alias = using or get_settings().database
    connection = connections[alias]
    outcomes: collections.Counter[str] = collections.Counter()
    each = _run_each(queues=queues, using=alias, limit=limit, with_scheduled=with_scheduled)
    while True:
        start = len(connection.run_on_commit)
        try:
            outcome = next(each)
        except StopIteration:
            break
        outcomes[outcome] += 1
        if connection.in_atomic_block:
            _run_new_callbacks(connection, start)
    return dict(outcomes)


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
    from aio_async.api import Task

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
