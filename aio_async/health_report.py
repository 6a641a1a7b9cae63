"""How the queue is doing, as a JSON-ready dict."""

from __future__ import annotations

import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Count, Min, Q
from django.utils import timezone

from aio_async.conf import get_settings
from aio_async.models import Error, Job, Status
from aio_async.queues import paused, workers
from aio_async.readmodel import QueueState, queue_states

__all__ = ["ahealth", "health", "problems"]

#: The window over which the recent completion rate is measured for the estimate.
RATE_WINDOW = datetime.timedelta(minutes=10)

_REMAINING = (Status.QUEUED, Status.WAITING, Status.RUNNING, Status.SUSPENDED)


def _counts(states: dict[str, QueueState]) -> dict[str, int]:
    """The whole queue's jobs by status, from the read model's per-queue counts."""
    by_status: dict[str, int] = {}
    for state in states.values():
        for status, count in state.counts.items():
            by_status[status] = by_status.get(status, 0) + count
    return {
        "all": sum(by_status.values()),
        "executed": by_status.get(Status.SUCCEEDED, 0),
        "remaining": sum(by_status.get(status, 0) for status in _REMAINING),
        "queued": by_status.get(Status.QUEUED, 0),
        "waiting": by_status.get(Status.WAITING, 0),
        "running": by_status.get(Status.RUNNING, 0),
        # In a durable sleep or waiting for an event: counted apart from the queued jobs.
        "suspended": by_status.get(Status.SUSPENDED, 0),
        "cancelled": by_status.get(Status.CANCELLED, 0),
        "failed": by_status.get(Status.FAILED, 0),
    }


def health(*, using: str | None = None) -> dict[str, Any]:
    """Counts, per-name breakdown, oldest due job's age, last success and a completion estimate."""
    alias = using or get_settings().database
    now = timezone.now()
    jobs = Job.objects.using(alias)
    states = queue_states(using=alias, now=now, with_queues=False)
    report: dict[str, Any] = {"time": now.isoformat(), **_counts(states)}
    report["errors"] = Error.objects.using(alias).count()
    by_name = (
        jobs.values("name")
        .annotate(
            all=Count("pk"),
            executed=Count("pk", filter=Q(status=Status.SUCCEEDED)),
            remaining=Count("pk", filter=Q(status__in=_REMAINING)),
            failed=Count("pk", filter=Q(status=Status.FAILED)),
            cancelled=Count("pk", filter=Q(status=Status.CANCELLED)),
        )
        .order_by("name")
    )
    # Errors are counted apart: joined to the jobs, each job would count once per error.
    errors = {
        row["job__name"]: row["n"]
        for row in Error.objects.using(alias).values("job__name").annotate(n=Count("pk"))
    }
    report["by_name"] = {
        str(row["name"]): {
            **{k: v for k, v in row.items() if k != "name"},
            "errors": errors.get(row["name"], 0),
        }
        for row in by_name
    }
    known = [status.value for status in Status]
    report["unknown_status"] = jobs.exclude(status__in=known).count()
    ages = [age for state in states.values() if (age := state.oldest_due_age(now)) is not None]
    report["oldest_due_age_seconds"] = round(max(ages), 3) if ages else None
    last = jobs.filter(status=Status.SUCCEEDED).order_by("-finished", "-pk").first()
    report["most_recent_executed"] = (
        {"id": last.pk, "name": last.name, "executed": last.finished.isoformat() if last.finished else None}
        if last
        else None
    )
    recent = jobs.filter(status=Status.SUCCEEDED, finished__gte=now - RATE_WINDOW).aggregate(
        count=Count("pk")
    )
    rate = recent["count"] / RATE_WINDOW.total_seconds()
    report["executed_per_second"] = round(rate, 3)
    due = jobs.filter(status__in=_REMAINING, run_after__lte=now).count()
    report["estimated_completion_seconds"] = round(due / rate, 1) if rate else (0.0 if due == 0 else None)
    return report


def problems(report: dict[str, Any], *, using: str | None = None) -> list[str]:
    """What makes the queue unhealthy by ``AIO_ASYNC["HEALTH"]``'s thresholds; [] when healthy.

    Adds the workers alive to ``report`` (``workers``), the paused queues (``paused_queues``:
    their jobs wait on purpose, and do not count as due) and the failed attempts of the
    window (``recent_failures``).
    """
    settings = get_settings()
    alias = using or settings.database
    limits = settings.health
    found = []
    due_age = report.get("oldest_due_age_seconds")
    held = paused(using=alias)
    report["paused_queues"] = sorted(held)
    if held and due_age is not None:
        now = timezone.now()
        oldest = (
            Job.objects.using(alias)
            .filter(status=Status.QUEUED, run_after__lte=now)
            .exclude(queue__in=held)
            .aggregate(due=Min("run_after"))["due"]
        )
        due_age = round((now - oldest).total_seconds(), 3) if oldest else None
    if limits.max_due_age is not None and due_age is not None and due_age > limits.max_due_age:
        found.append(f"the oldest due job has waited {due_age:g} s (more than {limits.max_due_age:g} s)")
    since = timezone.now() - datetime.timedelta(seconds=limits.failure_window)
    failures = (
        Error.objects.using(alias)
        .filter(created__gte=since)
        .exclude(exception="aio_async.errors.JobCancelled")
        .count()
    )
    report["recent_failures"] = {"seconds": limits.failure_window, "attempts_failed": failures}
    if limits.max_failures is not None and failures > limits.max_failures:
        found.append(
            f"{failures} attempts failed in the last {limits.failure_window:g} s "
            f"(more than {limits.max_failures})"
        )
    alive = workers(within=limits.max_heartbeat_age, using=alias)
    report["workers"] = alive
    if not alive:
        within = limits.max_heartbeat_age or 3 * settings.heartbeat_every
        found.append(f"no worker was heard of in the last {within:g} s")
    return found


ahealth = sync_to_async(health, thread_sensitive=True)
ahealth.__doc__ = "health(), from async code."
