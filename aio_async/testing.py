"""Helpers for a project's own test suite."""

from __future__ import annotations

import collections
import datetime
import functools

from asgiref.sync import async_to_sync
from django.db import connections, transaction
from django.utils import timezone

from aio_async import context, operations, sql
from aio_async.bridge import JobThread
from aio_async.conf import get_settings
from aio_async.errors import FunctionNotFound, JobRefused
from aio_async.models import Error, Group, Job
from aio_async.operations import ClaimRequest, ErrorInfo

__all__ = ["clear_queue", "run_jobs"]

WORKER_ID = "aio_async.testing"


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
    settings = get_settings()
    alias = using or settings.database
    served = queues or settings.queues
    request = ClaimRequest(
        WORKER_ID, () if "*" in served else served, datetime.timedelta(seconds=settings.lease_seconds)
    )
    jobs = JobThread(alias, WORKER_ID, settings)
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(limit):
        connection = connections[alias]
        claim = operations.claim(sql.for_vendor(connection.vendor), request, 1, True, timezone.now())
        with transaction.atomic(using=alias):
            attempts = sql.run_on(connection, claim)
        if not attempts:
            break
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
        outcomes[outcome.value] += 1
    return dict(outcomes)


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
