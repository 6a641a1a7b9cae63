"""One read model of the queue: per queue, jobs by status, the due ones, the oldest due, throughput.

The admin's overview, ``health()``, the metrics endpoint and ``queues.overview()`` all read the
queue through ``queue_states()``: one aggregate query over the job table grouped by queue and
status (the unfinished jobs only, where that is all a caller needs), one over the paused
queues, and, when asked, one over the jobs finished in the last day.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from django.db.models import Count, Min, Q
from django.utils import timezone

from aio_async.conf import get_settings
from aio_async.models import UNFINISHED, Job, Queue, Status

__all__ = ["QueueState", "queue_states"]


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
