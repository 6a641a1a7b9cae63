"""One read model of the queue: per queue, jobs by status, the due ones, the oldest due, throughput.

``stats()`` is the cheap one: per queue, the jobs due now, scheduled later, waiting,
running and suspended, the jobs that succeeded, failed and went back to the queue in a
recent window, the throughput and the pick-up latency over it. It reads the unfinished jobs
and those of the window only, through partial indexes, never the finished history: a
dashboard or a monitor can ask for it every few seconds.

The admin's overview, ``health()``, the metrics endpoint and ``queues.overview()`` all read the
queue through ``queue_states()``: one aggregate query over the job table grouped by queue and
status (the unfinished jobs only, where that is all a caller needs), one over the paused
queues, and, when asked, one over the jobs finished in the last day.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from aio_async.conf import get_settings
from aio_async.errors import InvalidOption
from aio_async.models import UNFINISHED, Job, Queue, Status
from aio_async.store.drivers.django import run
from aio_async.store.figures import queue_figures

__all__ = ["QueueState", "astats", "queue_states", "stats"]


@dataclasses.dataclass
class QueueState:
    """One queue as the read model sees it."""

    name: str
    #: Jobs by status (only the statuses it has jobs in).
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Queued jobs whose time has come.
    due: int = 0
    #: The ``run_after`` of the oldest due job, or None.
    oldest_due: datetime.datetime | None = None
    paused: bool = False
    #: Jobs finished in the last hour and day (``queue_states(recent=True)`` only).
    succeeded_hour: int = 0
    failed_hour: int = 0
    succeeded_day: int = 0
    failed_day: int = 0

    def oldest_due_age(self, now: datetime.datetime) -> float | None:
        """Seconds the oldest due job has waited, or None when none is due."""
        return None if self.oldest_due is None else max(0.0, (now - self.oldest_due).total_seconds())


def queue_states(
    *,
    using: str | None = None,
    now: datetime.datetime | None = None,
    unfinished_only: bool = False,
    with_queues: bool = True,
    recent: bool = False,
) -> dict[str, QueueState]:
    """Every queue with jobs (unfinished ones, if asked); ``with_queues``, every queue on record too."""
    alias = using or get_settings().database
    now = now or timezone.now()
    jobs = Job.objects.using(alias)
    if unfinished_only:
        jobs = jobs.filter(status__in=UNFINISHED)
    due = Q(status=Status.QUEUED, run_after__lte=now)
    rows = (
        jobs.values("queue", "status")
        .annotate(jobs=Count("pk"), due=Count("pk", filter=due), oldest=Min("run_after", filter=due))
        .order_by()
    )
    states: dict[str, QueueState] = {}
    for row in rows:
        state = states.setdefault(str(row["queue"]), QueueState(str(row["queue"])))
        state.counts[str(row["status"])] = int(row["jobs"])
        state.due += int(row["due"])
        if row["oldest"] is not None:
            state.oldest_due = min(filter(None, (state.oldest_due, row["oldest"])))
    if with_queues:
        for name, paused in Queue.objects.using(alias).values_list("name", "paused"):
            states.setdefault(name, QueueState(name)).paused = paused
    if recent:
        _add_recent(states, Job.objects.using(alias), now)
    return {name: states[name] for name in sorted(states)}


def _add_recent(states: dict[str, QueueState], jobs: Any, now: datetime.datetime) -> None:
    """The jobs each queue finished (succeeded, failed) in the last hour and the last day."""
    hour, day = now - datetime.timedelta(hours=1), now - datetime.timedelta(days=1)
    succeeded, failed = Q(status=Status.SUCCEEDED), Q(status=Status.FAILED)
    rows = (
        jobs.filter(status__in=(Status.SUCCEEDED, Status.FAILED), finished__gte=day)
        .values("queue")
        .annotate(
            succeeded_hour=Count("pk", filter=succeeded & Q(finished__gte=hour)),
            failed_hour=Count("pk", filter=failed & Q(finished__gte=hour)),
            succeeded_day=Count("pk", filter=succeeded),
            failed_day=Count("pk", filter=failed),
        )
        .order_by()
    )
    for row in rows:
        state = states.setdefault(str(row["queue"]), QueueState(str(row["queue"])))
        for field in ("succeeded_hour", "failed_hour", "succeeded_day", "failed_day"):
            setattr(state, field, int(row[field]))


#: The longest window ``stats()`` reads: a week of finished jobs, through their indexes.
MAX_WINDOW = 7 * 86400


def stats(window: float = 60, *, using: str | None = None) -> dict[str, Any]:
    """Per queue: depth now, and throughput and pick-up latency over the last ``window`` seconds.

    A JSON-ready dict: ``time``, ``window_seconds`` and ``queues``, each queue with ``due``
    (queued, due now), ``scheduled`` (queued, due later), ``waiting``, ``running``,
    ``suspended`` (in a durable sleep or waiting for an event), ``paused``,
    ``oldest_due_age_seconds``, ``succeeded`` and ``failed`` (jobs that finished so in the
    window), ``requeued`` (attempts that ended in the window and put their job back in the
    queue: retried, lost, timed out, snoozed, released), ``throughput_per_second``
    (succeeded and failed, per second of the window) and ``pickup_latency_seconds``
    (``attempts`` started in the window, and ``p50``, ``p95``, ``max`` of their ``started -
    run_after``; None without attempts). Its cost follows the unfinished jobs and those of
    the window, never the finished history.
    """
    if isinstance(window, bool) or not isinstance(window, int | float) or not 0 < window <= MAX_WINDOW:
        raise InvalidOption(
            f"window must be a number of seconds above 0 and at most a week ({MAX_WINDOW}), not {window!r}"
        )
    alias = using or get_settings().database
    now = timezone.now()
    since = now - datetime.timedelta(seconds=window)
    counts, latencies = run(lambda dialect: queue_figures(dialect, now, since), alias)
    paused = dict(Queue.objects.using(alias).values_list("name", "paused"))
    queues: dict[str, dict[str, Any]] = {}
    for queue, due, scheduled, waiting, running, suspended, succeeded, failed, requeued, oldest in counts:
        oldest_due = _datetime(oldest)
        queues[str(queue)] = {
            "due": int(due),
            "scheduled": int(scheduled),
            "waiting": int(waiting),
            "running": int(running),
            "suspended": int(suspended),
            "paused": bool(paused.get(queue, False)),
            "oldest_due_age_seconds": None
            if oldest_due is None
            else round(max(0.0, (now - oldest_due).total_seconds()), 3),
            "succeeded": int(succeeded),
            "failed": int(failed),
            "requeued": int(requeued),
            "throughput_per_second": round((int(succeeded) + int(failed)) / window, 3),
            "pickup_latency_seconds": {"attempts": 0, "p50": None, "p95": None, "max": None},
        }
    for queue, attempts, p50, p95, longest in latencies:
        if str(queue) in queues:  # a latency means an attempt of the window: its queue is counted
            queues[str(queue)]["pickup_latency_seconds"] = {
                "attempts": int(attempts),
                "p50": _seconds(p50),
                "p95": _seconds(p95),
                "max": _seconds(longest),
            }
    return {"time": now.isoformat(), "window_seconds": window, "queues": queues}


def _seconds(value: Any) -> float | None:
    return None if value is None else round(max(0.0, float(value)), 3)


def _datetime(value: Any) -> datetime.datetime | None:
    """A datetime from a raw row: PostgreSQL's drivers give one, SQLite gives Django's text (UTC)."""
    if value is None or isinstance(value, datetime.datetime):
        return value
    parsed = parse_datetime(str(value))
    if parsed is None:
        return None
    if timezone.is_naive(parsed) and settings.USE_TZ:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed


astats = sync_to_async(stats, thread_sensitive=True)
astats.__doc__ = "stats(), from async code."
