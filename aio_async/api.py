"""Putting jobs in the queue: schedule, deschedule and the task decorator.

``schedule()`` checks everything first (pure functions, no database) and ends in one write,
made through the caller's connection and so inside the caller's transaction (DESIGN promises
1 and 6). Each ``a``-prefixed twin is the sync function bridged with
``sync_to_async(thread_sensitive=True)``, the thread Django's own async ORM uses.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.db import connections, transaction
from django.utils import timezone

from aio_async import allow, dialects
from aio_async.conf import get_settings
from aio_async.errors import GroupClosed, InvalidArguments, InvalidOption
from aio_async.models import FINISHED, Group, Job, Status
from aio_async.payload import JSONError, identity, json_value, normalise_arguments
from aio_async.store import cancel, insert, release_final

__all__ = [
    "Task",
    "adeschedule",
    "aschedule",
    "aschedule_many",
    "deschedule",
    "schedule",
    "schedule_many",
    "set_group_final",
    "task",
]

P = ParamSpec("P")
R = TypeVar("R")

PRIORITY_LIMIT = 1_000_000
DEFAULT_PRIORITY = 5


@dataclasses.dataclass(frozen=True)
class _Options:
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout: float | None = None


_tasks: dict[str, Task[Any, Any]] = {}


class Task(Generic[P, R]):
    """A callable registered with ``@aio_async.task``: allowed to run, and schedulable."""

    def __init__(self, function: Callable[P, R], name: str, options: _Options) -> None:
        self.function = function
        self.name = name
        self.options = options
        functools.update_wrapper(self, function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function now, in this process."""
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<aio_async.Task {self.name}>"

    def schedule(
        self,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """Schedule a call of this task; options as for ``aio_async.schedule``."""
        return schedule(self, args, kwargs, **options)

    async def aschedule(
        self,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """Schedule a call of this task from async code."""
        return await aschedule(self, args, kwargs, **options)


@overload
def task(function: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(
    function: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register a sync or ``async def`` function as allowed to run, with default options."""
    options = _Options(
        queue=None if queue is None else _queue(queue),
        priority=None if priority is None else _priority(priority),
        max_attempts=None if max_attempts is None else _max_attempts(max_attempts),
        timeout=_timeout(timeout),
    )

    def decorate(function: Callable[P, R]) -> Task[P, R]:
        task_name = allow.check_name(name) if name is not None else allow.dotted_name(function)
        wrapped = Task(function, task_name, options)
        _tasks[task_name] = wrapped
        allow.register(task_name, function)
        return wrapped

    return decorate if function is None else decorate(function)


def _priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > PRIORITY_LIMIT:
        raise InvalidOption(
            f"priority must be an integer between -{PRIORITY_LIMIT} and {PRIORITY_LIMIT} "
            f"(higher runs first), got {value!r}"
        )
    return value


def _max_attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise InvalidOption(f"max_attempts must be an integer from 1 to 1000, got {value!r}")
    return value


def _queue(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise InvalidOption(f"queue must be a non-empty string of at most 255 characters, got {value!r}")
    return value


def _timeout(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidOption(f"timeout must be a positive number of seconds or None, got {value!r}")
    return float(value)


def _meta(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidOption(f"meta must be a dict, got {type(value).__name__}")
    try:
        normalised: dict[str, Any] = json_value(value, "meta")
    except JSONError as exc:
        raise InvalidOption(f"{exc}; meta must be JSON") from None
    return normalised


def run_after_value(value: object, now: datetime.datetime) -> datetime.datetime:
    """When a job becomes due: ``None`` (now), a timedelta from now, or a datetime.

    A naive datetime under ``USE_TZ = True`` is read in the current time zone, as Django's
    forms read it; an aware one under ``USE_TZ = False`` is converted to local naive time.
    """
    if value is None:
        return now
    if isinstance(value, datetime.timedelta):
        return now + value
    if not isinstance(value, datetime.datetime):
        raise InvalidOption(f"run_after must be a datetime, a timedelta or None, got {type(value).__name__}")
    if django_settings.USE_TZ and timezone.is_naive(value):
        return timezone.make_aware(value)
    if not django_settings.USE_TZ and timezone.is_aware(value):
        return timezone.make_naive(value)
    return value


def _name_of(function: object) -> str:
    if isinstance(function, Task):
        return function.name
    if isinstance(function, str):
        return allow.check_name(function)
    if callable(function):
        return allow.dotted_name(function)
    raise InvalidOption(
        f"function must be a callable or a dotted path such as 'app.tasks.send', got {function!r}"
    )


#: Job's fields in the order ``Job(*values)`` takes them.
_ATTNAMES = [field.attname for field in Job._meta.concrete_fields]


def job_maker(
    function: object,
    priority: object = None,
    run_after: object = None,
    meta: object = None,
    *,
    queue: object = None,
    max_attempts: object = None,
    timeout: object = None,
) -> Callable[[object, object], Job]:
    """Check what every call shares, once; return a maker of unsaved Jobs from (args, kwargs).

    No database is touched: ``job_maker(...)(args, kwargs)`` is a ``schedule()`` call's Job,
    checked, before it is written.
    """
    name = _name_of(function)
    allow.resolve(name)
    options = _tasks[name].options if name in _tasks else _Options()
    now = timezone.now()
    shared_meta = _meta(meta)
    fixed = {
        "name": name,
        "queue": _queue(queue if queue is not None else options.queue or "default"),
        "priority": _priority(priority if priority is not None else (options.priority or DEFAULT_PRIORITY)),
        "max_attempts": _max_attempts(
            max_attempts if max_attempts is not None else options.max_attempts or get_settings().max_attempts
        ),
        "timeout": _timeout(timeout if timeout is not None else options.timeout),
        "added": now,
        "run_after": run_after_value(run_after, now),
        "status": Status.QUEUED,
    }
    template = [
        fixed[attname] if attname in fixed else field.get_default()
        for attname, field in zip(_ATTNAMES, Job._meta.concrete_fields, strict=True)
    ]
    at = {attname: _ATTNAMES.index(attname) for attname in ("args", "kwargs", "identity", "meta")}

    def make(args: object, kwargs: object) -> Job:
        job_args, job_kwargs = normalise_arguments(args, kwargs)
        values = template.copy()
        values[at["args"]] = job_args
        values[at["kwargs"]] = job_kwargs
        values[at["identity"]] = identity(name, job_args, job_kwargs)
        values[at["meta"]] = dict(shared_meta)
        return Job(*values)  # type: ignore[misc]  # positional, in field order, as from_db builds

    return make


def _open_group(group: Group | str, alias: str) -> Group:
    """The group a new member joins: the given one if still open, or by reference."""
    if isinstance(group, Group):
        locked = Group.objects.using(alias).select_for_update().filter(pk=group.pk).first()
        if locked is None:
            raise InvalidOption(f"group {group.pk} does not exist (was it saved?)")
        if locked.jobs.filter(status__in=FINISHED).exists():
            raise GroupClosed(
                f"group {locked.reference!r} (id {locked.pk}) already has a finished job, so it "
                "takes no new one; schedule with group=<reference> to start a new generation"
            )
        return locked
    if not isinstance(group, str) or not group or len(group) > 255:
        raise InvalidOption(f"group must be a Group or a reference string, got {group!r}")
    latest = (
        Group.objects.using(alias)
        .select_for_update()
        .filter(reference=group)
        .order_by("-created", "-id")
        .first()
    )
    if latest is not None and not latest.jobs.filter(status__in=FINISHED).exists():
        return latest
    return Group.objects.using(alias).create(
        reference=group, description=latest.description if latest else ""
    )


def _queue_database(group: object, using: str | None) -> str:
    """The alias to write to, once the group's type and the database's vendor are checked."""
    if group is not None and not isinstance(group, Group | str):
        raise InvalidOption(f"group must be a Group or a reference string, got {group!r}")
    alias = using or get_settings().database
    dialects.for_connection(connections[alias])  # a clear error on an unsupported database
    return alias


def schedule(
    function: Callable[..., Any] | str,
    args: list[Any] | tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    priority: int | None = None,
    run_after: datetime.datetime | datetime.timedelta | None = None,
    group: Group | str | None = None,
    meta: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    using: str | None = None,
) -> Job:
    """Put a call of ``function`` in the queue, inside the caller's transaction."""
    make = job_maker(
        function, priority, run_after, meta, queue=queue, max_attempts=max_attempts, timeout=timeout
    )
    job = make(args, kwargs)
    alias = _queue_database(group, using)
    if group is None:
        # One INSERT: in the caller's transaction, or a transaction of its own. On PostgreSQL
        # a trigger sends the NOTIFY inside that same transaction.
        insert([job], alias)
        return job
    with transaction.atomic(using=alias):
        job.group = _open_group(group, alias)
        insert([job], alias)
    return job


def schedule_many(
    function: Callable[..., Any] | str,
    calls: Iterable[tuple[list[Any] | tuple[Any, ...] | None, dict[str, Any] | None]],
    priority: int | None = None,
    run_after: datetime.datetime | datetime.timedelta | None = None,
    group: Group | str | None = None,
    meta: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    using: str | None = None,
) -> list[Job]:
    """Schedule many calls of ``function``, each an ``(args, kwargs)`` pair, in one INSERT.

    Every call is checked as ``schedule()`` checks it before anything is written; one bad
    call writes nothing at all. The jobs join the caller's transaction like ``schedule()``'s.
    """
    make = job_maker(
        function, priority, run_after, meta, queue=queue, max_attempts=max_attempts, timeout=timeout
    )
    jobs = []
    for index, call in enumerate(calls):
        if not isinstance(call, tuple | list) or len(call) != 2:
            raise InvalidArguments(
                f"call {index} must be an (args, kwargs) pair such as ((1, 2), {{}}), got {call!r:.80}"
            )
        try:
            jobs.append(make(call[0], call[1]))
        except InvalidArguments as exc:
            raise InvalidArguments(f"call {index}: {exc}") from None
    alias = _queue_database(group, using)
    if not jobs:
        return []
    with transaction.atomic(using=alias):
        if group is not None:
            joined = _open_group(group, alias)
            for job in jobs:
                job.group = joined
        insert(jobs, alias)
    return jobs


def deschedule(
    function: Callable[..., Any] | str,
    args: list[Any] | tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    using: str | None = None,
) -> int:
    """Cancel every job with this name and arguments that has not started; return how many."""
    name = _name_of(function)
    job_args, job_kwargs = normalise_arguments(args, kwargs)
    alias = using or get_settings().database
    return cancel(Job.objects.using(alias).filter(identity=identity(name, job_args, job_kwargs)))


def set_group_final(group: Group, job: Job) -> None:
    """Make ``job`` the group's final job: it waits until every other member has finished."""
    alias = job._state.db or get_settings().database
    if job.group_id != group.pk:
        raise InvalidOption(
            f"job {job.pk} is not a member of group {group.reference!r}; schedule it with "
            "group=<the group> first"
        )
    with transaction.atomic(using=alias):
        Group.objects.using(alias).select_for_update().filter(pk=group.pk).first()
        if not Job.objects.using(alias).filter(pk=job.pk, status=Status.QUEUED).update(status=Status.WAITING):
            raise InvalidOption(f"job {job.pk} has already started, so it cannot be a final job")
        Group.objects.using(alias).filter(pk=group.pk).update(final=job)
        release_final(group.pk, alias)
    group.final = job
    job.refresh_from_db(using=alias, fields=["status"])


aschedule = sync_to_async(schedule, thread_sensitive=True)
aschedule.__doc__ = "Put a call of ``function`` in the queue from async code (schedule, bridged)."
aschedule_many = sync_to_async(schedule_many, thread_sensitive=True)
aschedule_many.__doc__ = "Schedule many calls of ``function`` in one INSERT, from async code."
adeschedule = sync_to_async(deschedule, thread_sensitive=True)
adeschedule.__doc__ = "Cancel matching jobs that have not started, from async code."
