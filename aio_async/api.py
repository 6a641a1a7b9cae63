"""Putting jobs in the queue: schedule, deschedule and the task decorator.

``schedule()`` checks everything first (pure functions, no database) and ends in one write,
made through the caller's connection and so inside the caller's transaction (DESIGN promises
1 and 6). Each ``a``-prefixed twin is the sync function bridged with
``sync_to_async(thread_sensitive=True)``, the thread Django's own async ORM uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import inspect
import os
import socket
from collections.abc import Callable, Collection, Iterable
from typing import Any, Generic, NoReturn, ParamSpec, TypeVar, Unpack, overload

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured, SynchronousOnlyOperation
from django.db import IntegrityError, connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from aio_async import allow, signals
from aio_async.conf import get_settings
from aio_async.errors import InvalidArguments, InvalidOption
from aio_async.models import UNFINISHED, Dependency, Group, Job, Status
from aio_async.payload import (
    DEFAULT_PRIORITY,
    JobOptions,
    Limits,
    TaskOptions,
    Unique,
    UniqueOptions,
    check_max_attempts,
    check_meta,
    check_option_names,
    check_priority,
    check_queue,
    check_text,
    check_timeout,
    identity,
    normalise_arguments,
    run_after_value,
)
from aio_async.store import memory, scheduling
from aio_async.store.dialects import for_vendor
from aio_async.store.statements import REPLACED

__all__ = [
    "ScheduleOptions",
    "Task",
    "acancel",
    "acancel_pending",
    "adeschedule",
    "aretry",
    "aschedule",
    "aschedule_many",
    "cancel",
    "cancel_pending",
    "deschedule",
    "not_in_async_code",
    "retry",
    "schedule",
    "schedule_many",
    "task",
]

P = ParamSpec("P")
R = TypeVar("R")


class ScheduleOptions(JobOptions, total=False):
    """What ``schedule()`` takes by keyword: a job's options (``JobOptions``), and where and
    after what it is written."""

    #: The database alias to write to (default: ``AIO_ASYNC["DATABASE"]``).
    using: str | None
    #: Jobs (or job ids) this one waits for: it runs once every one of them has succeeded.
    after: Job | int | Iterable[Job | int] | None


class Task(Generic[P, R]):
    """A callable registered with ``@aio_async.task``: allowed to run, and schedulable."""

    def __init__(self, function: Callable[P, R], target: allow.Target) -> None:
        self.function = function
        self.name = target.name
        self.options = target.options
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
        priority: int | None = None,
        run_after: Any = None,
        group: Group | str | None = None,
        meta: dict[str, Any] | None = None,
        **options: Unpack[ScheduleOptions],
    ) -> Job:
        """Schedule a call of this task; options as for ``aio_async.schedule``."""
        return schedule(self, args, kwargs, priority, run_after, group, meta, **options)

    async def aschedule(
        self,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        priority: int | None = None,
        run_after: Any = None,
        group: Group | str | None = None,
        meta: dict[str, Any] | None = None,
        **options: Unpack[ScheduleOptions],
    ) -> Job:
        """Schedule a call of this task from async code."""
        return await aschedule(self, args, kwargs, priority, run_after, group, meta, **options)

    def __getattr__(self, name: str) -> NoReturn:
        hint = _FAMILIAR.get(name)
        if hint is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        raise AttributeError(f"aio_async tasks have no .{name}(): {hint}")


_FAMILIAR = {
    "delay": "use .schedule([arg, ...], {'key': value}) (or await .aschedule(...))",
    "apply_async": "use .schedule(args, kwargs, run_after=..., priority=...)",
    "defer": "use .schedule(args, kwargs) (or await .aschedule(...))",
    "enqueue": (
        "use .schedule(args, kwargs); for Django's Tasks API, decorate with django.tasks.task and "
        "set TASKS to aio_async.backends.AioAsyncBackend"
    ),
    "aenqueue": "use await .aschedule(args, kwargs)",
}


@overload
def task(function: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *, name: str | None = None, priority: int | None = None, **options: Unpack[JobOptions]
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(
    function: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    priority: int | None = None,
    **options: Unpack[JobOptions],
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register a sync or ``async def`` function as allowed to run, with default options."""
    check_option_names(options, _TASK_NAMES, "@task")
    defaults = TaskOptions.checked(
        queue=options.get("queue"),
        priority=priority,
        max_attempts=options.get("max_attempts"),
        timeout=options.get("timeout"),
        unique=UniqueOptions.of(options),
        limits=Limits.of(options),
    )

    def decorate(function: Callable[P, R]) -> Task[P, R]:
        task_name = allow.check_name(name) if name is not None else allow.dotted_name(function)
        return Task(function, allow.register(task_name, function, defaults))

    return decorate if function is None else decorate(function)


def _name_of(function: object) -> str:
    if isinstance(function, Task):
        return function.name
    if isinstance(function, str):
        return allow.check_name(function)
    if callable(function):
        return allow.dotted_name(function)
    raise InvalidOption(
        f"function must be a callable or a dotted path such as 'app.tasks.send', got {function!r:.80}"
    )


def _first(*values: Any) -> Any:
    """The first value that is not None (0 and "" are values)."""
    return next((value for value in values if value is not None), None)


#: Job's fields in the order ``Job(*values)`` takes them.
_FIELDS = Job._meta.concrete_fields
_ATTNAMES = [field.attname for field in _FIELDS]
#: The fields a new job is written with: all but the id, which the database assigns.
_INSERTED = tuple(field for field in _FIELDS if not field.primary_key)


_PER_CALL = ("args", "kwargs", "identity", "meta", "unique_key")
_LIMIT_COLUMNS = ("limit_key", "concurrency_limit", "rate_count", "rate_period")


def job_maker(
    function: object,
    priority: object = None,
    run_after: object = None,
    meta: object = None,
    **options: Unpack[JobOptions],
) -> JobMaker:
    """Check what every call shares, once; return a maker of unsaved Jobs from (args, kwargs).

    No database is touched: ``job_maker(...)(args, kwargs)`` is a ``schedule()`` call's Job,
    checked, before it is written.
    """
    check_option_names(options, _MAKER_NAMES, "job_maker()")
    name = _name_of(function)
    target = allow.resolve_for_worker(name)  # refuses what a worker would refuse
    defaults = target.options
    rule = UniqueOptions.of(options).over(defaults.unique).rule()
    limits = Limits.of(options).over(defaults.limits)
    now = timezone.now()
    shared_meta = check_meta(meta)
    fixed = {
        "name": name,
        "queue": check_queue(_first(options.get("queue"), defaults.queue, "default")),
        "priority": check_priority(_first(priority, defaults.priority, DEFAULT_PRIORITY)),
        "max_attempts": check_max_attempts(
            _first(options.get("max_attempts"), defaults.max_attempts, get_settings().max_attempts)
        ),
        "timeout": check_timeout(_first(options.get("timeout"), defaults.timeout)),
        "added": now,
        "run_after": run_after_value(run_after, now),
        "status": Status.QUEUED,
        "unique_states": rule.stored_states if rule else "",
    }
    if limits.concurrency is None and limits.rate is None and limits.key is None:
        limits = get_settings().queue_limits.get(str(fixed["queue"]), limits)  # the queue's, if any
    template = [
        fixed[attname] if attname in fixed else field.get_default()
        for attname, field in zip(_ATTNAMES, _FIELDS, strict=True)
    ]
    at = {attname: _ATTNAMES.index(attname) for attname in (*_PER_CALL, *_LIMIT_COLUMNS)}
    # A key made from the arguments is made per call; any other is settled (and checked) once.
    per_call = callable(limits.key)
    shared = None if per_call else limits.for_job(name, [], {})
    signature = target.signature

    def make(args: object, kwargs: object) -> Job:
        job_args, job_kwargs = normalise_arguments(args, kwargs)
        if signature is not None:
            try:
                signature.bind(*job_args, **job_kwargs)
            except TypeError as exc:
                raise InvalidArguments(
                    f"the arguments do not fit {name}{signature}: {exc}"
                    f"{'' if 'unexpected keyword' in str(exc) else _unexpected(signature, job_kwargs)}"
                ) from None
        values = template.copy()
        values[at["args"]] = job_args
        values[at["kwargs"]] = job_kwargs
        values[at["identity"]] = call = identity(name, job_args, job_kwargs)
        values[at["meta"]] = dict(shared_meta)
        if rule is not None:
            values[at["unique_key"]] = rule.stored_key(name, call)
        limited = limits.for_job(name, job_args, job_kwargs) if per_call else shared
        if limited is not None:
            rate_count, rate_period = limited.rate or (None, None)
            for column, value in zip(
                _LIMIT_COLUMNS, (limited.key, limited.concurrency, rate_count, rate_period), strict=True
            ):
                values[at[column]] = value
        return Job(*values)  # type: ignore[misc]  # positional, in field order, as from_db builds

    return JobMaker(make, rule)


def _unexpected(signature: inspect.Signature, kwargs: dict[str, Any]) -> str:
    """The keyword arguments ``signature`` takes no parameter for, named (bind() names only one
    problem, often a missing argument where a name is misspelt)."""
    parameters = signature.parameters
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters.values()):
        return ""
    unexpected = [
        key
        for key in kwargs
        if key not in parameters or parameters[key].kind is inspect.Parameter.POSITIONAL_ONLY
    ]
    if not unexpected:
        return ""
    plural = "s" if len(unexpected) > 1 else ""
    return f" (unexpected keyword argument{plural} {', '.join(map(repr, unexpected))})"


@dataclasses.dataclass(frozen=True)
class JobMaker:
    """What ``job_maker`` returns: a maker of unsaved Jobs, and the uniqueness they follow."""

    make: Callable[[object, object], Job]
    unique: Unique | None

    def __call__(self, args: object, kwargs: object) -> Job:
        """An unsaved, checked Job for a call with these arguments."""
        return self.make(args, kwargs)


def not_in_async_code(name: str) -> None:
    """Refuse a sync call from a running event loop, with the async twin's name."""
    if os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise SynchronousOnlyOperation(
        f"{name}() was called from async code (an ASGI view or a coroutine), where Django's "
        f"database connections may not be used: use `await a{name}(...)` instead"
    )


def _queue_database(group: object, using: str | None) -> str:
    """The alias to write to, once the group's type and the database's vendor are checked."""
    if group is not None and not isinstance(group, Group):
        check_text(group, "group")
    alias = using or get_settings().database
    if alias not in connections:
        raise InvalidOption(f"using={alias!r} is not a database alias of DATABASES")
    try:
        for_vendor(connections[alias].vendor)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{exc}: point AIO_ASYNC['DATABASE'] at a supported alias") from None
    return alias


def _insert(jobs: list[Job], alias: str, *, unique: bool = False) -> None:
    """Write new jobs through the caller's connection, in one statement where the database allows.

    Each job written gets its id. With ``unique``, a job whose ``unique_key`` another job holds
    is skipped and keeps no id.
    """
    if not jobs:
        return
    written = []
    for job, pk in zip(jobs, scheduling.insert(jobs, _INSERTED, alias, unique=unique), strict=True):
        if pk is None:
            continue
        job.pk = pk
        job._state.adding = False
        job._state.db = alias
        written.append(job)
    signals.scheduled(written, alias)  # job_scheduled, on commit


#: How often a unique insert is tried again when the job holding its key moved on between the
#: INSERT that met it and the SELECT that looked for it (it started, or finished).
_UNIQUE_TRIES = 5
#: The fields a replacing call gives the job holding its key.
_REPLACED = tuple(field for name in REPLACED for field in _INSERTED if field.name == name)


def _insert_unique(jobs: list[Job], alias: str, rule: Unique) -> list[Job]:
    """Write unique jobs, each unless another job holds its key; return the job of each call.

    The unique index decides, in the caller's transaction: an INSERT that meets a key held by a
    transaction still open waits for it, then skips the row (it committed) or writes it (it
    rolled back). A call whose key was held gets the holder, read back, with
    ``unique_conflict`` set; with ``replace``, a holder that has not started takes the call's
    arguments, priority and ``run_after`` first.
    """
    if rule.period is not None:
        oldest = timezone.now() - datetime.timedelta(seconds=rule.period)
        scheduling.expire_unique(sorted({str(job.unique_key) for job in jobs}), oldest, alias)
    # One job per key: the first call's, or the last one's when it replaces.
    chosen: dict[str, Job] = {}
    for job in reversed(jobs) if not rule.replace else jobs:
        chosen[str(job.unique_key)] = job
    holders: dict[str, int] = {}
    pending = list(chosen.values())
    #: With ``replace``: the holders found last turn, that this turn's replace could not update.
    seen: dict[str, int] = {}
    for _ in range(_UNIQUE_TRIES):
        if rule.replace:
            holders.update(scheduling.replace(pending, _REPLACED, alias))
            pending = [job for job in pending if job.unique_key not in holders]
        _insert(pending, alias, unique=True)
        pending = [job for job in pending if job.pk is None]
        found = scheduling.unique_holders([str(job.unique_key) for job in pending], alias)
        if rule.replace:
            # A holder committed since this turn's replace looked (a racing call's INSERT, which
            # this INSERT waited for) takes the arguments next turn; one found twice could not
            # take them (it has started), and is returned as it is.
            found, seen = {key: pk for key, pk in found.items() if seen.get(key) == pk}, found
        holders.update(found)
        pending = [job for job in pending if job.unique_key not in holders]
        if not pending:
            break
    else:
        raise IntegrityError(f"{len(pending)} unique job(s) could neither be written nor found; try again")
    existing = Job.objects.using(alias).in_bulk(set(holders.values()))
    for holder in existing.values():
        holder.unique_conflict = True
    return [
        existing[holders[key]] if (key := str(job.unique_key)) in holders else chosen[key] for job in jobs
    ]


def schedule(
    function: Callable[..., Any] | str,
    args: list[Any] | tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    priority: int | None = None,
    run_after: Any = None,
    group: Group | str | None = None,
    meta: dict[str, Any] | None = None,
    **options: Unpack[ScheduleOptions],
) -> Job:
    """Put a call of ``function`` in the queue, inside the caller's transaction.

    With ``after`` (jobs or job ids), the job waits until every one of them has succeeded;
    if one fails for good or is cancelled, so is this job.
    """
    not_in_async_code("schedule")
    check_option_names(options, _SCHEDULE_NAMES, "schedule()")
    using, after = options.pop("using", None), options.pop("after", None)
    per_job: JobOptions = options  # what is left: the job's own options
    make = job_maker(function, priority, run_after, meta, **per_job)
    alias = _queue_database(group, using)
    job = make(args, kwargs)
    prerequisites = _prerequisites(after, make.unique)
    signals.scheduling([job])  # job_scheduling: receivers may add to its meta
    if (queue := memory.active()) is not None:
        return _in_memory(queue, [job], alias, group, make.unique, prerequisites)[0]
    if group is None and make.unique is None and not prerequisites:
        # One INSERT: in the caller's transaction, or a transaction of its own. On PostgreSQL
        # a trigger sends the NOTIFY inside that same transaction.
        _insert([job], alias)
        return job
    if group is None and make.unique is not None:
        # Each statement of a unique insert stands alone (outside a transaction, each commits):
        # the INSERT decides, and a holder that moves on before it is read is looked for again.
        return _insert_unique([job], alias, make.unique)[0]
    with transaction.atomic(using=alias):
        if group is not None:
            job.group = Group.objects.using(alias).join(group)
        if make.unique is not None:
            return _insert_unique([job], alias, make.unique)[0]
        _insert_after([job], alias, prerequisites)
    return job


def schedule_many(
    function: Callable[..., Any] | str,
    calls: Iterable[tuple[list[Any] | tuple[Any, ...] | None, dict[str, Any] | None]],
    priority: int | None = None,
    run_after: Any = None,
    group: Group | str | None = None,
    meta: dict[str, Any] | None = None,
    **options: Unpack[ScheduleOptions],
) -> list[Job]:
    """Schedule many calls of ``function``, each an ``(args, kwargs)`` pair, in one INSERT.

    Every call is checked as ``schedule()`` checks it before anything is written; one bad
    call writes nothing at all. The jobs join the caller's transaction like ``schedule()``'s.
    With ``after``, every one of them waits for those jobs (see ``schedule``).
    """
    not_in_async_code("schedule_many")
    check_option_names(options, _SCHEDULE_MANY_NAMES, "schedule_many()")
    using, after = options.pop("using", None), options.pop("after", None)
    per_job: JobOptions = options  # what is left: the job's own options
    make = job_maker(function, priority, run_after, meta, **per_job)
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
    prerequisites = _prerequisites(after, make.unique)
    if not jobs:
        return []
    signals.scheduling(jobs)  # job_scheduling: receivers may add to their meta
    if (queue := memory.active()) is not None:
        return _in_memory(queue, jobs, alias, group, make.unique, prerequisites)
    with transaction.atomic(using=alias):
        if group is not None:
            joined = Group.objects.using(alias).join(group)
            for job in jobs:
                job.group = joined
        if make.unique is not None:
            return _insert_unique(jobs, alias, make.unique)
        _insert_after(jobs, alias, prerequisites)
    return jobs


def _in_memory(
    queue: memory.MemoryQueue,
    jobs: list[Job],
    alias: str,
    group: object,
    unique: Unique | None,
    prerequisites: list[int],
) -> list[Job]:
    """Put jobs in the queue in memory (``aio_async.testing.in_memory()``), by the database's rules."""
    if group is not None:
        raise InvalidOption(
            "group= needs the database: the queue in memory (testing.in_memory()) keeps no groups"
        )
    if unique is None:
        queue.add(jobs, after=prerequisites)
        signals.scheduled(jobs, alias, at_once=True)
        return jobs
    if unique.period is not None:
        queue.expire(timezone.now() - datetime.timedelta(seconds=unique.period))
    made: list[Job] = []
    for job in jobs:
        holder = queue.holder(str(job.unique_key))
        if holder is None:
            queue.add([job])
            signals.scheduled([job], alias, at_once=True)
            made.append(job)
            continue
        if unique.replace:
            queue.replace(holder, job, REPLACED)
        holder.unique_conflict = True
        made.append(holder)
    return made


def _names(function: Callable[..., Any], options: frozenset[str]) -> frozenset[str]:
    """The keywords ``function`` takes: its named parameters, and ``options`` (its TypedDict's)."""
    parameters = inspect.signature(function).parameters.values()
    named = {
        parameter.name
        for parameter in parameters
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    return frozenset(named) | options


_TASK_NAMES = _names(task, JobOptions.__optional_keys__)
_MAKER_NAMES = _names(job_maker, JobOptions.__optional_keys__)
_SCHEDULE_NAMES = _names(schedule, ScheduleOptions.__optional_keys__)
_SCHEDULE_MANY_NAMES = _names(schedule_many, ScheduleOptions.__optional_keys__)


def _prerequisites(after: object, unique: Unique | None) -> list[int]:
    """The ids of the jobs ``after`` names, checked before anything is written."""
    if after is None:
        return []
    items = [after] if isinstance(after, Job | int | str) else after
    if not isinstance(items, Iterable) or isinstance(items, dict):
        raise InvalidOption(f"after= takes a job, a job id or a list of them, got {after!r:.80}")
    ids = set()
    for item in items:
        if isinstance(item, Job) and item.pk is not None:
            ids.add(item.pk)
        elif isinstance(item, int) and not isinstance(item, bool):
            ids.add(item)
        else:
            raise InvalidOption(f"after= takes saved jobs or job ids, got {item!r:.80}")
    if ids and unique is not None:
        raise InvalidOption("after= cannot be combined with a unique job: schedule one or the other")
    return sorted(ids)


def _insert_after(jobs: list[Job], alias: str, prerequisites: list[int]) -> None:
    """Write jobs that wait for ``prerequisites`` (if any), settled at once if those have finished.

    Run inside a transaction: the prerequisites' rows are marked (and locked) first, so that
    one finishing meanwhile either waits for this transaction and settles these jobs, or has
    finished before and is seen so here.
    """
    if not prerequisites:
        _insert(jobs, alias)
        return
    found = scheduling.mark_prerequisites(prerequisites, alias)
    missing = [pk for pk in prerequisites if pk not in found]
    if missing:
        raise InvalidOption(f"after=: no job {', '.join(map(str, missing))} in database {alias!r}")
    for job in jobs:
        job.status = Status.WAITING
    _insert(jobs, alias)
    Dependency.objects.using(alias).bulk_create(
        [Dependency(job_id=job.pk, after_id=pk) for job in jobs for pk in prerequisites]
    )
    ids = [job.pk for job in jobs]
    scheduling.settle(ids, alias)
    statuses = dict(Job.objects.using(alias).filter(pk__in=ids).values_list("pk", "status"))
    for job in jobs:
        job.status = statuses[job.pk]


#: Jobs cancelled per statement (SQLite caps a statement's parameters).
CANCEL_BATCH = 500

Cancellable = Job | int | QuerySet[Job] | Iterable[Job | int]


def _job_ids(
    jobs: Cancellable, using: str | None, states: Collection[str], verb: str
) -> tuple[list[int], str]:
    """The ids of ``jobs`` (of a queryset: those in ``states``), and the database they are in."""
    if isinstance(jobs, QuerySet):
        found = jobs.filter(status__in=states)
        return list(found.order_by().values_list("id", flat=True)), jobs.db
    items = [jobs] if isinstance(jobs, Job | int) else list(jobs)
    ids = []
    for item in items:
        if isinstance(item, Job) and item.pk is not None:
            ids.append(item.pk)
        elif isinstance(item, int) and not isinstance(item, bool):
            ids.append(item)
        else:
            raise InvalidOption(f"{verb}() takes jobs, job ids or a queryset of jobs, got {item!r:.80}")
    saved = {item._state.db for item in items if isinstance(item, Job)} - {None}
    return ids, _queue_database(None, using or (saved.pop() if len(saved) == 1 else None))


def _memory_ids(jobs: Cancellable, verb: str) -> list[int]:
    """The ids of ``jobs`` in the queue in memory (a queryset would need the database)."""
    if isinstance(jobs, QuerySet):
        raise InvalidOption(f"{verb}() of a queryset needs the database: pass jobs or ids in memory")
    items = [jobs] if isinstance(jobs, Job | int) else list(jobs)
    ids = []
    for item in items:
        pk = item.pk if isinstance(item, Job) else item
        if not isinstance(pk, int) or isinstance(pk, bool):
            raise InvalidOption(f"{verb}() takes jobs or job ids, got {item!r:.80}")
        ids.append(pk)
    return ids


def _cancel(jobs: Cancellable, by: str | None, using: str | None, *, running_too: bool) -> int:
    """Cancel ``jobs`` in one transaction (the caller's, if any); return how many."""
    if (queue := memory.active()) is not None:
        stopped = queue.cancel(_memory_ids(jobs, "cancel"), running_too=running_too)
        signals.cancelled_in_memory(queue, stopped, by or "cancel()")
        return len(stopped)
    # A suspended job has started (it sleeps or waits between its steps): cancel_pending leaves it.
    states = UNFINISHED if running_too else (Status.WAITING, Status.QUEUED)
    ids, alias = _job_ids(jobs, using, states, "cancel")
    if by is None:
        by = f"cancel() in process {os.getpid()} on {socket.gethostname()}"
    cancelled: list[int] = []
    with transaction.atomic(using=alias):
        for start in range(0, len(ids), CANCEL_BATCH):
            batch = sorted(set(ids[start : start + CANCEL_BATCH]))
            cancelled += scheduling.cancel(batch, by, alias, running_too=running_too)
        signals.cancelled(cancelled, by, alias)  # job_cancelled, on commit
    return len(cancelled)


#: The jobs ``retry()`` queues to run now: those waiting to run, failed or cancelled.
RETRYABLE = (Status.QUEUED, Status.FAILED, Status.CANCELLED)


def retry(jobs: Cancellable, *, using: str | None = None) -> list[int]:
    """Queue jobs to run now (queued, failed or cancelled ones); return the ids of those it queued.

    A failed job is given one more attempt than it has used. ``jobs`` is a job, a job id, a
    queryset of jobs or an iterable of jobs and ids; running, waiting and succeeded jobs are
    left as they are. Runs in the caller's transaction.
    """
    not_in_async_code("retry")
    if (queue := memory.active()) is not None:
        return queue.retry(_memory_ids(jobs, "retry"), RETRYABLE)
    ids, alias = _job_ids(jobs, using, RETRYABLE, "retry")
    retried: list[int] = []
    with transaction.atomic(using=alias):
        for start in range(0, len(ids), CANCEL_BATCH):
            batch = sorted(set(ids[start : start + CANCEL_BATCH]))
            retried += scheduling.retry(batch, RETRYABLE, alias)
    return retried


def cancel(jobs: Cancellable, *, by: str | None = None, using: str | None = None) -> int:
    """Cancel jobs that have not finished, running ones too; return how many were cancelled.

    ``jobs`` is a job, a job id, a queryset of jobs or an iterable of jobs and ids. Each
    cancelled job gets an Error row saying who cancelled it (``by``: a person, a process).
    A running job's worker is told (at once on PostgreSQL, within a second elsewhere): a
    coroutine job is cancelled, a sync job sees ``current_job().cancel_requested``, and
    nothing either writes from then on is committed. Runs in the caller's transaction.
    """
    not_in_async_code("cancel")
    return _cancel(jobs, by, using, running_too=True)


def cancel_pending(jobs: QuerySet[Job], *, by: str | None = None) -> int:
    """Cancel the jobs in ``jobs`` that have not started, releasing group finals they held back."""
    return _cancel(jobs, by, None, running_too=False)


def deschedule(
    function: Callable[..., Any] | str,
    args: list[Any] | tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    using: str | None = None,
) -> int:
    """Cancel every job with this name and arguments that has not started; return how many."""
    not_in_async_code("deschedule")
    name = _name_of(function)
    job_args, job_kwargs = normalise_arguments(args, kwargs)
    if (queue := memory.active()) is not None:
        key = identity(name, job_args, job_kwargs)
        pending = [
            job.pk for job in queue.jobs if job.identity == key and job.status in ("waiting", "queued")
        ]
        cancelled = queue.cancel(pending, running_too=False)
        signals.cancelled_in_memory(queue, cancelled, "deschedule()")
        return len(cancelled)
    alias = _queue_database(None, using)
    matching = Job.objects.using(alias).filter(identity=identity(name, job_args, job_kwargs))
    return cancel_pending(matching, by="deschedule()")


aschedule = sync_to_async(schedule, thread_sensitive=True)
aschedule.__doc__ = "Put a call of ``function`` in the queue from async code (schedule, bridged)."
aschedule_many = sync_to_async(schedule_many, thread_sensitive=True)
aschedule_many.__doc__ = "Schedule many calls of ``function`` in one INSERT, from async code."
adeschedule = sync_to_async(deschedule, thread_sensitive=True)
adeschedule.__doc__ = "Cancel matching jobs that have not started, from async code."
acancel = sync_to_async(cancel, thread_sensitive=True)
acancel.__doc__ = "Cancel jobs that have not finished, running ones too, from async code."
acancel_pending = sync_to_async(cancel_pending, thread_sensitive=True)
acancel_pending.__doc__ = "Cancel the jobs of a queryset that have not started, from async code."
aretry = sync_to_async(retry, thread_sensitive=True)
aretry.__doc__ = "Queue jobs to run now (queued, failed or cancelled ones), from async code."
