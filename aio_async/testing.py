"""Helpers for a project's own test suite."""

from __future__ import annotations

import collections

from asgiref.sync import async_to_sync, iscoroutinefunction
from django.db import transaction

from aio_async import store
from aio_async.bridge import prepare, refuse, run_sync_job
from aio_async.conf import get_settings
from aio_async.errors import ScheduleError
from aio_async.models import Error, Group, Job

__all__ = ["clear_queue", "run_jobs"]


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
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(limit):
        jobs = store.claim(
            alias,
            worker="aio_async.testing",
            queues=queues or settings.queues,
            limit=1,
            lease_seconds=settings.lease_seconds,
        )
        if not jobs:
            break
        job = jobs[0]
        try:
            function, args, kwargs = prepare(job)
        except ScheduleError as exc:
            outcome = refuse(job, exc, "aio_async.testing", settings)
        else:
            if iscoroutinefunction(function):
                function = async_to_sync(function)
            outcome = run_sync_job(job, function, args, kwargs, "aio_async.testing", settings)
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
