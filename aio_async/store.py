"""The queue's named database operations: claim, complete, fail, release, heartbeat, rescue.

Every write that ends a job's attempt is *fenced*: it matches the row only while the job is
still running under the same attempt number and worker that claimed it. A worker whose lease
was taken over finds no row to update, raises LeaseLost, and its whole transaction (the job's
own work included) rolls back (DESIGN promise 4).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import traceback
from typing import Any

from django.db import connections, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from aio_async import dialects
from aio_async.conf import QueueSettings
from aio_async.models import FINISHED, Error, Group, Job, Status
from aio_async.retry import retry_delay

__all__ = [
    "ErrorInfo",
    "LeaseLost",
    "cancel",
    "claim",
    "complete",
    "complete_many",
    "fail",
    "heartbeat",
    "insert",
    "release",
    "release_final",
    "rescue",
]

logger = logging.getLogger("aio_async.store")


class LeaseLost(Exception):
    """The job's lease was taken over; this worker's writes for it must roll back."""


@dataclasses.dataclass(frozen=True)
class ErrorInfo:
    """What an Error row records about one failed attempt."""

    exception: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture an exception's type, message and full traceback."""
        kind = type(exc)
        name = (
            kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        )
        return cls(
            exception=name[:255],
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
        )


def _fenced(job: Job, worker: str) -> Any:
    return Job.objects.using(job._state.db).filter(
        pk=job.pk, status=Status.RUNNING, attempts=job.attempts, locked_by=worker
    )


def claim(
    alias: str,
    *,
    worker: str,
    queues: tuple[str, ...],
    limit: int,
    lease_seconds: float,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> list[Job]:
    """Lease up to ``limit`` due jobs of ``queues`` to ``worker``, in queue order."""
    now = timezone.now()
    lease_until = now + datetime.timedelta(seconds=lease_seconds)
    request = dialects.Claim(worker, queues, limit, now, lease_until, include, exclude)
    with transaction.atomic(using=alias):
        return dialects.claim(connections[alias], request)


def insert(jobs: list[Job], alias: str) -> None:
    """Write new jobs through the caller's connection, in one statement where the database allows.

    Sets each job's id. Call it inside a transaction when it may take more than one statement.
    """
    connection = connections[alias]
    dialects.for_connection(connection).insert(connection, jobs)
    for job in jobs:
        job._state.adding = False
        job._state.db = alias


def complete(job: Job, result: Any, worker: str) -> None:
    """Mark ``job`` succeeded with ``result``; call inside the job's own transaction."""
    if not _mark_succeeded(job, result, worker):
        raise LeaseLost(job.pk)
    if job.group_id is not None:
        release_final(job.group_id, job._state.db or "default")


def complete_many(finished: list[tuple[Job, Any]], worker: str) -> list[bool]:
    """Mark several jobs succeeded in one transaction, each fenced; True where it held its lease."""
    alias = finished[0][0]._state.db or "default"
    held = []
    with transaction.atomic(using=alias):
        for job, result in finished:
            held.append(_mark_succeeded(job, result, worker))
            if held[-1] and job.group_id is not None:
                release_final(job.group_id, alias)
    return held


def _mark_succeeded(job: Job, result: Any, worker: str) -> bool:
    # Every job passes here: one precompiled statement rather than a queryset built per call.
    connection = connections[job._state.db or "default"]
    cursor = dialects.for_connection(connection).cursor(connection)
    quote = connection.ops.quote_name
    sql = (
        f"UPDATE {quote(Job._meta.db_table)} SET status = %s, result = %s, executed = %s, "  # noqa: S608
        "locked_until = NULL WHERE id = %s AND status = %s AND attempts = %s AND locked_by = %s"
    )
    result_field = Job._meta.get_field("result")
    with cursor:
        cursor.execute(
            sql,
            [
                Status.SUCCEEDED.value,
                result_field.get_db_prep_save(result, connection),
                connection.ops.adapt_datetimefield_value(timezone.now()),
                job.pk,
                Status.RUNNING.value,
                job.attempts,
                worker,
            ],
        )
        return bool(cursor.rowcount == 1)


def fail(
    job: Job,
    error: ErrorInfo,
    worker: str,
    settings: QueueSettings,
    *,
    final: bool = False,
    retry_now: bool = False,
) -> Status:
    """Record a failed attempt in a new transaction: an Error row, then retry or give up.

    The retry waits for the back-off, unless ``retry_now`` (a lost worker is not the job's fault).
    """
    alias = job._state.db or "default"
    now = timezone.now()
    give_up = final or job.attempts >= job.max_attempts
    with transaction.atomic(using=alias):
        if give_up:
            updated = _fenced(job, worker).update(status=Status.FAILED, locked_until=None)
        else:
            delay = datetime.timedelta(seconds=0 if retry_now else retry_delay(job.attempts, settings))
            updated = _fenced(job, worker).update(
                status=Status.QUEUED,
                run_after=now + delay,
                priority=F("priority") - 1,
                locked_by="",
                locked_until=None,
            )
        if updated != 1:
            raise LeaseLost(job.pk)
        Error.objects.using(alias).create(
            job_id=job.pk,
            attempt=job.attempts,
            exception=error.exception,
            message=error.message,
            traceback=error.traceback,
            worker=worker,
            created=now,
        )
        if give_up and job.group_id is not None:
            release_final(job.group_id, alias)
    return Status.FAILED if give_up else Status.QUEUED


def release(job: Job, worker: str) -> bool:
    """Give a claimed job back to the queue without using up its attempt (clean shutdown)."""
    updated: int = _fenced(job, worker).update(
        status=Status.QUEUED, attempts=F("attempts") - 1, locked_by="", locked_until=None
    )
    return updated == 1


def heartbeat(alias: str, job_ids: list[int], worker: str, lease_seconds: float) -> int:
    """Extend the leases ``worker`` holds on ``job_ids``, in one statement."""
    if not job_ids:
        return 0
    until = timezone.now() + datetime.timedelta(seconds=lease_seconds)
    updated: int = (
        Job.objects.using(alias)
        .filter(pk__in=job_ids, status=Status.RUNNING, locked_by=worker)
        .update(locked_until=until)
    )
    return updated


def rescue(alias: str, worker: str, settings: QueueSettings) -> list[int]:
    """Requeue (or fail, when out of attempts) the jobs whose lease expired; return their ids."""
    now = timezone.now()
    rescued = []
    with transaction.atomic(using=alias):
        expired = (
            Job.objects.using(alias)
            .select_for_update(skip_locked=True)
            .filter(status=Status.RUNNING, locked_until__lt=now)
            .order_by("pk")[:100]
        )
        for job in expired:
            error = ErrorInfo(
                exception="aio_async.WorkerLost",
                message=(
                    f"worker {job.locked_by} lost its lease on attempt {job.attempts} "
                    f"(it expired at {job.locked_until:%Y-%m-%d %H:%M:%S%z}); rescued by {worker}"
                ),
                traceback="",
            )
            fail(job, error, job.locked_by, settings, retry_now=True)
            rescued.append(job.pk)
    return rescued


def cancel(jobs: QuerySet[Job]) -> int:
    """Cancel the jobs in ``jobs`` that have not started, releasing group finals they held back."""
    alias = jobs.db
    with transaction.atomic(using=alias):
        pending = jobs.filter(status__in=(Status.QUEUED, Status.WAITING))
        groups = set(pending.exclude(group=None).values_list("group_id", flat=True))
        cancelled: int = pending.update(status=Status.CANCELLED, cancelled=timezone.now())
        for group_id in sorted(groups):
            release_final(group_id, alias)
    return cancelled


def release_final(group_id: int, alias: str) -> bool:
    """Queue the group's final job once every other member has finished; True if it did."""
    group = Group.objects.using(alias).select_for_update().filter(pk=group_id).first()
    if group is None or group.final_id is None:
        return False
    members = Job.objects.using(alias).filter(group_id=group_id).exclude(pk=group.final_id)
    if members.exclude(status__in=FINISHED).exists():
        return False
    released: int = (
        Job.objects.using(alias)
        .filter(Q(pk=group.final_id), status=Status.WAITING)
        .update(status=Status.QUEUED, run_after=timezone.now())
    )
    return bool(released)
