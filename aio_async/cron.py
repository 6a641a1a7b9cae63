"""Periodic jobs: cron schedules whose every tick makes exactly one job, across all workers.

A schedule comes from ``@aio_async.periodic("*/5 * * * *")`` on a task or from
``AIO_ASYNC["PERIODIC"]`` (for tasks of other packages). Cron strings are read by croniter:
five fields, or six with seconds last. Times follow ``TIME_ZONE`` unless a schedule names its
own zone.

Every worker runs every schedule. A tick is fired by writing its ``Tick`` row and its job in
one transaction; the unique (schedule, tick) lets exactly one worker do it, on any number of
machines. Ticks missed while no worker ran are not made up for, unless the schedule says
``replay=N`` (then the last N are). With ``overlap=False`` a tick is skipped while the job of
the schedule's previous tick has not finished.
"""

from __future__ import annotations

import dataclasses
import datetime
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from croniter import croniter
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.utils import timezone

from aio_async import sql
from aio_async.errors import InvalidOption, ScheduleError
from aio_async.payload import check_priority, check_queue, check_text, normalise_arguments

__all__ = ["PeriodicRunner", "Schedule", "describe", "fire", "parse_setting", "periodic", "schedules"]

F = TypeVar("F", bound=Callable[..., Any])
UTC = datetime.UTC

_DECLARED: dict[str, Schedule] = {}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A cron schedule of one call: its name, the cron string, the call and its options."""

    name: str
    cron: str
    task: str
    args: list[Any] = dataclasses.field(default_factory=list)
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    timezone: str | None = None
    replay: int = 0
    overlap: bool = True

    @classmethod
    def checked(cls, **values: Any) -> Schedule:
        """A schedule after its checks; InvalidOption names what is wrong."""
        cron = values.get("cron")
        if not isinstance(cron, str) or not croniter.is_valid(cron):
            raise InvalidOption(
                f"cron must be a cron string such as '*/5 * * * *' (five fields, or six with seconds "
                f"last), got {cron!r:.80}"
            )
        args, kwargs = normalise_arguments(values.get("args"), values.get("kwargs"))
        zone = values.get("timezone")
        if zone is not None:
            try:
                zoneinfo.ZoneInfo(zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
                raise InvalidOption(
                    f"timezone must be a time zone name such as 'Europe/Paris', got {zone!r:.80}"
                ) from None
        replay = values.get("replay", 0)
        if isinstance(replay, bool) or not isinstance(replay, int) or not 0 <= replay <= 1000:
            raise InvalidOption(
                f"replay must be an integer from 0 to 1000 (missed ticks to make up), got {replay!r}"
            )
        overlap = values.get("overlap", True)
        if not isinstance(overlap, bool):
            raise InvalidOption(f"overlap must be True or False, got {overlap!r}")
        queue, priority = values.get("queue"), values.get("priority")
        return cls(
            name=check_text(values.get("name"), "name"),
            cron=" ".join(cron.split()),
            task=check_text(values.get("task"), "task", limit=1024),
            args=args,
            kwargs=kwargs,
            queue=None if queue is None else check_queue(queue),
            priority=None if priority is None else check_priority(priority),
            timezone=zone,
            replay=replay,
            overlap=overlap,
        )

    @property
    def zone(self) -> datetime.tzinfo:
        """The schedule's time zone: its own, else ``TIME_ZONE``."""
        return zoneinfo.ZoneInfo(self.timezone or django_settings.TIME_ZONE or "UTC")

    @property
    def fixed_time(self) -> bool:
        """True when the minute and hour fields are fixed (not ``*``-based), as cron reads it.

        Such a schedule runs once at a wall-clock time that occurs twice when clocks go back;
        a ``*`` schedule runs by the actual passing of time.
        """
        minute, hour = self.cron.split()[:2]
        return not (minute.startswith("*") or hour.startswith("*"))

    def ticks(self, after: datetime.datetime, until: datetime.datetime) -> Iterator[datetime.datetime]:
        """The ticks strictly after ``after`` and no later than ``until``, in order."""
        times = croniter(self.cron, after.astimezone(self.zone))
        while True:
            tick: datetime.datetime = times.get_next(datetime.datetime)
            if tick > until:
                return
            yield tick

    def latest(
        self, after: datetime.datetime, until: datetime.datetime, count: int
    ) -> list[datetime.datetime]:
        """The last ``count`` ticks strictly after ``after`` and no later than ``until``, in order.

        Found walking back from ``until``, so that a long gap (workers stopped for a month, a
        schedule every second) costs ``count`` steps, not one per tick missed.
        """
        found: list[datetime.datetime] = []
        times = croniter(self.cron, (until + datetime.timedelta(seconds=1)).astimezone(self.zone))
        while len(found) < count:
            tick: datetime.datetime = times.get_prev(datetime.datetime)
            if tick <= after:
                break
            if tick <= until:
                found.append(tick)
        return found[::-1]

    def next_tick(self, after: datetime.datetime) -> datetime.datetime:
        """The first tick strictly after ``after``."""
        tick: datetime.datetime = croniter(self.cron, after.astimezone(self.zone)).get_next(datetime.datetime)
        return tick

    def key(self, tick: datetime.datetime) -> str:
        """The tick's key in ``Tick.tick``: local wall-clock time if ``fixed_time``, else UTC."""
        if self.fixed_time:
            return tick.astimezone(self.zone).replace(tzinfo=None).isoformat()
        return tick.astimezone(UTC).isoformat()


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
        from aio_async import allow
        from aio_async.api import Task

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


_SETTING_KEYS = {
    "CRON": "cron",
    "TASK": "task",
    "ARGS": "args",
    "KWARGS": "kwargs",
    "NAME": "name",
    "QUEUE": "queue",
    "PRIORITY": "priority",
    "TIMEZONE": "timezone",
    "REPLAY": "replay",
    "OVERLAP": "overlap",
}


def parse_setting(raw: object) -> tuple[Schedule, ...]:
    """``AIO_ASYNC["PERIODIC"]``: a list of dicts with CRON and TASK; ImproperlyConfigured if one is bad."""
    if not isinstance(raw, list | tuple):
        raise ImproperlyConfigured(f"AIO_ASYNC['PERIODIC'] must be a list of dicts, got {raw!r:.80}.")
    found: dict[str, Schedule] = {}
    for index, entry in enumerate(raw):
        label = f"AIO_ASYNC['PERIODIC'][{index}]"
        if not isinstance(entry, Mapping) or "CRON" not in entry or "TASK" not in entry:
            raise ImproperlyConfigured(f"{label} must be a dict with CRON and TASK, got {entry!r:.80}.")
        unknown = sorted(str(key) for key in entry if key not in _SETTING_KEYS)
        if unknown:
            raise ImproperlyConfigured(f"Unknown {label} keys {unknown}; known: {sorted(_SETTING_KEYS)}.")
        values = {_SETTING_KEYS[key]: value for key, value in entry.items()}
        values.setdefault("name", values["task"])
        try:
            schedule = Schedule.checked(**values)
        except ScheduleError as exc:
            raise ImproperlyConfigured(f"{label}: {exc}") from None
        if schedule.name in found:
            raise ImproperlyConfigured(
                f"{label}: a periodic schedule named {schedule.name!r} exists already; give this one a NAME."
            )
        found[schedule.name] = schedule
    return tuple(found.values())


def schedules(*, check_tasks: bool = False) -> list[Schedule]:
    """Every schedule, by name: the decorated tasks' and ``AIO_ASYNC["PERIODIC"]``'s.

    With ``check_tasks`` (a worker starting), a schedule whose task does not import or is not
    allowed to run is a configuration error, rather than a failure at each of its ticks.
    """
    from aio_async import allow
    from aio_async.conf import get_settings

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
    from aio_async.api import schedule as schedule_job
    from aio_async.models import UNFINISHED, Job, Tick

    connection = connections[using]
    with transaction.atomic(using=using):
        rows = sql.run_on(connection, _insert_tick(schedule, tick))
        if not rows:
            return None
        if not schedule.overlap:
            previous = (
                Tick.objects.using(using)
                .filter(schedule=schedule.name, job_id__isnull=False)
                .exclude(pk=rows[0][0])
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
        Tick.objects.using(using).filter(pk=rows[0][0]).update(job_id=job.pk)
        return int(job.pk)


def _insert_tick(schedule: Schedule, tick: datetime.datetime) -> sql.Op[sql.Rows]:
    rows = yield sql.insert_tick(), [schedule.name, schedule.key(tick), tick]
    return rows


class PeriodicRunner:
    """What a worker does for the schedules: make up for missed ticks at start, then fire due ones."""

    def __init__(self, found: list[Schedule], using: str = "default") -> None:
        self.schedules = found
        self.using = using
        self.next: dict[str, datetime.datetime] = {}

    def start(self, now: datetime.datetime) -> list[int]:
        """Fire the missed ticks a schedule replays; plan every schedule's next tick. Returns job ids."""
        from aio_async.models import Tick

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
    from aio_async.models import Tick

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
