"""Periodic jobs: cron schedules whose every tick makes exactly one job, across all workers.

A schedule (``schedules.Schedule``) comes from ``@aio_async.periodic("*/5 * * * *")`` on a
task or from ``AIO_ASYNC["PERIODIC"]`` (for tasks of other packages).

Every worker runs every schedule. A tick is fired by writing its ``Tick`` row and its job in
one transaction; the unique (schedule, tick) lets exactly one worker do it, on any number of
machines. Ticks missed while no worker ran are not made up for, unless the schedule says
``replay=N`` (then the last N are). With ``overlap=False`` a tick is skipped while the job of
the schedule's previous tick has not finished.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from aio_async import allow
from aio_async.api import Task
from aio_async.api import schedule as schedule_job
from aio_async.conf import get_settings
from aio_async.errors import InvalidOption, ScheduleError
from aio_async.models import UNFINISHED, Job, Tick
from aio_async.schedules import Schedule
from aio_async.store.maintenance import insert_tick

__all__ = ["PeriodicRunner", "describe", "fire", "periodic", "schedules"]

F = TypeVar("F", bound=Callable[..., Any])

_DECLARED: dict[str, Schedule] = {}


def periodic(
    cron: str,
    *,
    args: list[Any] | tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    name: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    timezone: str | None = None,
    replay: int = 0,
    overlap: bool = True,
) -> Callable[[F], F]:
    """Run a task on a cron schedule (put it above ``@task``); one job per tick, across all workers."""

    def decorate(function: F) -> F:
        task_name = function.name if isinstance(function, Task) else allow.dotted_name(function)
        schedule = Schedule.checked(
            name=name or task_name,
            cron=cron,
            task=task_name,
            args=args,
            kwargs=kwargs,
            queue=queue,
            priority=priority,
            timezone=timezone,
            replay=replay,
            overlap=overlap,
        )
        known = _DECLARED.get(schedule.name)
        if known is not None and known != schedule:
            raise InvalidOption(
                f"a periodic schedule named {schedule.name!r} exists already; give this one name='...'"
            )
        _DECLARED[schedule.name] = schedule
        return function

    return decorate


def schedules(*, check_tasks: bool = False) -> list[Schedule]:
    """Every schedule, by name: the decorated tasks' and ``AIO_ASYNC["PERIODIC"]``'s.

    With ``check_tasks`` (a worker starting), a schedule whose task does not import or is not
    allowed to run is a configuration error, rather than a failure at each of its ticks.
    """
    found = dict(_DECLARED)
    for schedule in get_settings().periodic:
        if schedule.name in found:
            raise ImproperlyConfigured(
                f"AIO_ASYNC['PERIODIC'] names {schedule.name!r}, as a @periodic task does; give it a NAME."
            )
        found[schedule.name] = schedule
    if check_tasks:
        for schedule in found.values():
            try:
                allow.resolve(schedule.task)
            except ScheduleError as exc:
                raise ImproperlyConfigured(f"periodic schedule {schedule.name!r}: {exc}") from None
    return [found[name] for name in sorted(found)]


def fire(schedule: Schedule, tick: datetime.datetime, using: str = "default") -> int | None:
    """Write the tick and its job in one transaction; the job's id, or None.

    None when another worker fired this tick already, or when the schedule does not overlap
    and its previous job has not finished (the tick is recorded as skipped).
    """
    with transaction.atomic(using=using):
        tick_id = insert_tick(schedule.name, schedule.key(tick), tick, using)
        if tick_id is None:
            return None
        if not schedule.overlap:
            previous = (
                Tick.objects.using(using)
                .filter(schedule=schedule.name, job_id__isnull=False)
                .exclude(pk=tick_id)
                .order_by("-at")
                .values_list("job_id", flat=True)
                .first()
            )
            if (
                previous is not None
                and Job.objects.using(using).filter(pk=previous, status__in=UNFINISHED).exists()
            ):
                return None
        job = schedule_job(
            schedule.task,
            schedule.args,
            schedule.kwargs,
            priority=schedule.priority,
            queue=schedule.queue,
            meta={"periodic": schedule.name, "tick": schedule.key(tick)},
            using=using,
        )
        Tick.objects.using(using).filter(pk=tick_id).update(job_id=job.pk)
        return int(job.pk)


class PeriodicRunner:
    """What a worker does for the schedules: make up for missed ticks at start, then fire due ones."""

    def __init__(self, found: list[Schedule], using: str = "default") -> None:
        self.schedules = found
        self.using = using
        self.next: dict[str, datetime.datetime] = {}

    def start(self, now: datetime.datetime) -> list[int]:
        """Fire the missed ticks a schedule replays; plan every schedule's next tick. Returns job ids."""
        made = []
        for schedule in self.schedules:
            last = (
                Tick.objects.using(self.using)
                .filter(schedule=schedule.name)
                .order_by("-at")
                .values_list("at", flat=True)
                .first()
            )
            if last is not None and schedule.replay:
                missed = schedule.latest(last, now, schedule.replay)
                made += [job for tick in missed if (job := fire(schedule, tick, self.using)) is not None]
            self.next[schedule.name] = schedule.next_tick(now)
        return made

    def due(self, now: datetime.datetime) -> list[int]:
        """Fire the ticks that came due (the latest, and as many before it as the schedule replays)."""
        made = []
        for schedule in self.schedules:
            planned = self.next[schedule.name]
            if planned > now:
                continue
            ticks = schedule.latest(planned - datetime.timedelta(microseconds=1), now, schedule.replay + 1)
            made += [job for tick in ticks if (job := fire(schedule, tick, self.using)) is not None]
            self.next[schedule.name] = schedule.next_tick(now)
        return made

    def seconds_to_next(self, now: datetime.datetime) -> float:
        """Seconds until the earliest planned tick."""
        if not self.next:
            return 60.0
        return max(0.0, min((tick - now).total_seconds() for tick in self.next.values()))


def describe(
    found: list[Schedule], now: datetime.datetime | None = None, *, using: str = "default"
) -> list[dict[str, Any]]:
    """The schedules as JSON-ready dicts, each with its next tick and the last one fired on ``using``."""
    now = now or timezone.now()
    ticks = Tick.objects.using(using)
    described = []
    for schedule in found:
        last = ticks.filter(schedule=schedule.name).order_by("-at").values_list("at", flat=True).first()
        described.append(
            {
                "name": schedule.name,
                "cron": schedule.cron,
                "task": schedule.task,
                "timezone": str(schedule.zone),
                "next_tick": schedule.next_tick(now).isoformat(),
                "last_tick": None if last is None else last.astimezone(schedule.zone).isoformat(),
            }
        )
    return described
