"""Cron schedules, read and checked (pure): ``Schedule`` and ``AIO_ASYNC["PERIODIC"]``.

Cron strings are read by croniter: five fields, or six with seconds last. Times follow
``TIME_ZONE`` unless a schedule names its own zone. ``cron`` fires their ticks.
"""

from __future__ import annotations

import dataclasses
import datetime
import zoneinfo
from collections.abc import Iterator, Mapping
from typing import Any

from croniter import croniter
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from aio_async.errors import InvalidOption, ScheduleError
from aio_async.payload import check_priority, check_queue, check_text, normalise_arguments

__all__ = ["Schedule", "parse_setting"]

UTC = datetime.UTC


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
