"""The queue's operations: claim, heartbeat, complete, fail, release and rescue a job.

Each operation is written once, as a sequence of the statements of ``sql`` (a generator that
yields a statement and receives its rows). The same sequence runs on one of Django's
connections (``sql.run_on``: a sync job's completion inside its own transaction, the queue's
bookkeeping on SQLite) and on the worker's own asyncio PostgreSQL connection
(``postgres.PsycopgConnector``). What the store decides (retry or give up, excuse or charge)
is pure and lives here too, beside the statements it chooses.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import traceback
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any

from aio_async import allow, sql
from aio_async.conf import QueueSettings
from aio_async.context import JobContext
from aio_async.errors import JobCancelled, JobRefused, ScheduleError, WorkerLost
from aio_async.models import release_final
from aio_async.retry import retry_delay

__all__ = [
    "Attempt",
    "ClaimRequest",
    "ErrorInfo",
    "Outcome",
    "Verdict",
    "cancel",
    "claim",
    "claim_limited",
    "class_path",
    "complete",
    "fail",
    "heartbeat",
    "lost",
    "release",
    "rescue",
    "settle",
    "settle_unsettled",
    "settle_waiting",
    "snooze",
    "verdict",
]

#: Expired jobs handled per rescue pass; each in a transaction of its own.
RESCUE_BATCH = 100


class Outcome(enum.Enum):
    """How one attempt of a job ended, for the worker that ran it."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    #: The attempt's lease was taken over: nothing it wrote was committed.
    LEASE_LOST = "lease_lost"
    #: Given back to the queue without using up an attempt (a clean stop).
    RELEASED = "released"
    #: The job raised Snooze: back in the queue for later, without using up an attempt.
    SNOOZED = "snoozed"
    #: The job was cancelled while it ran: a sync job's work rolled back; a coroutine job
    #: was stopped at its next await (what it wrote until then stays committed).
    CANCELLED = "cancelled"


def class_path(kind: type[BaseException]) -> str:
    """The dotted path an Error row names an exception class by (``aio_async.errors.WorkerLost``)."""
    return f"{kind.__module__}.{kind.__qualname__}"


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What an Error row records about one failed attempt."""

    exception: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture an exception's importable class path, message and full traceback."""
        kind = type(exc)
        name = (
            kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        )
        return cls(exception=name[:255], message=str(exc), traceback="".join(traceback.format_exception(exc)))

    @classmethod
    def of(cls, kind: type[BaseException], message: str) -> ErrorInfo:
        """An error of aio_async's own, with no traceback to show."""
        return cls(exception=class_path(kind), message=message, traceback="")


@dataclasses.dataclass(slots=True)
class Attempt:
    """One claim of a job: what a worker needs to run it and to fence what it writes.

    ``number`` is the job's attempt count after the claim; with the worker's id it is the
    fencing token that every write of this attempt carries.
    """

    job_id: int
    number: int
    name: str
    args: Any
    kwargs: Any
    queue: str = "default"
    priority: int = 5
    excused: int = 0
    max_attempts: int = 1
    timeout: float | None = None
    group_id: int | None = None
    isolated: bool = False
    started: datetime.datetime | None = None
    #: Why the row cannot be run at all (arguments that do not decode), or None.
    problem: str | None = None
    #: Jobs run after this one (known at the claim): its end settles them, in one transaction.
    has_dependents: bool = False
    #: The job's limit key, if it has limits: its end may leave room for another job of the key.
    limit_key: str | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any], started: datetime.datetime) -> Attempt:
        """An attempt from a claim's row (``sql.CLAIMED``); arguments decoded one row at a time.

        Arguments are read as text and decoded here, so that one row that cannot be decoded
        (nested too deep, say) is refused alone instead of failing the whole claim.
        """
        (
            job_id,
            name,
            args,
            kwargs,
            queue,
            priority,
            attempts,
            excused,
            max_attempts,
            timeout,
            group,
            isolated,
            has_dependents,
            limit_key,
        ) = row
        problem = None
        try:
            args = json.loads(args) if isinstance(args, str) else args
            kwargs = json.loads(kwargs) if isinstance(kwargs, str) else kwargs
        except (ValueError, RecursionError) as exc:
            args, kwargs = [], {}
            problem = f"its arguments cannot be decoded ({type(exc).__name__}: {str(exc)[:200]})"
        return cls(
            job_id, attempts, name, args, kwargs, queue, priority, excused, max_attempts, timeout, group,
            bool(isolated), started, problem, bool(has_dependents), limit_key,
        )  # fmt: skip

    @property
    def charged(self) -> int:
        """Attempts so far that count against ``max_attempts``, this one included."""
        return self.number - self.excused

    def context(self, worker_id: str) -> JobContext:
        """What ``aio_async.current_job()`` says inside this attempt's function."""
        return JobContext(
            self.job_id,
            self.name,
            self.queue,
            self.number,
            self.charged,
            self.max_attempts,
            worker_id,
            self.started,
        )

    def resolve(self) -> tuple[allow.Target, list[Any], dict[str, Any]]:
        """The row's callable and arguments, checked again (rows can be written by anyone).

        Raises JobRefused, its cause the specific reason, for a row that cannot run.
        """
        try:
            if self.problem is not None:
                raise JobRefused(self.problem)
            target = allow.resolve(self.name)
            args, kwargs = self.args, self.kwargs
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise JobRefused(
                    f"args must be a JSON array and kwargs a JSON object, got {type(args).__name__} "
                    f"and {type(kwargs).__name__}"
                )
            if target.signature is not None:
                try:
                    target.signature.bind(*args, **kwargs)
                except TypeError as exc:
                    raise JobRefused(
                        f"the arguments do not fit {self.name}{target.signature}: {exc}"
                    ) from None
            if self.timeout is not None and not 0 < self.timeout < math.inf:
                raise JobRefused(f"timeout must be a positive number of seconds, got {self.timeout!r}")
            if self.charged > self.max_attempts:
                raise JobRefused(f"attempt {self.charged} of at most {self.max_attempts}: no attempt is left")
        except ScheduleError as exc:
            raise JobRefused(f"{type(exc).__name__}: {exc}") from exc
        return target, args, kwargs


@dataclasses.dataclass(frozen=True)
class ClaimRequest:
    """What a worker claims: its queues (empty: every queue) and its name filters."""

    worker_id: str
    queues: tuple[str, ...]
    lease: datetime.timedelta
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _mine(rows: Sequence[tuple[int, int, str | None]]) -> str:
    """The JSON parameter that fenced writes read as ``mine``: [[job id, attempt, value], ...]."""
    return json.dumps(rows, separators=(",", ":"))


def _filters(
    request: ClaimRequest, paused: Collection[str], now: datetime.datetime, alone: bool
) -> tuple[tuple[int, int, int, int], list[Any]] | None:
    """The counts and parameters of ``sql._claimable``; None when every queue served is paused."""
    queues = [queue for queue in request.queues if queue not in paused]
    if request.queues and not queues:
        return None
    left_out = [] if request.queues else sorted(paused)
    params: list[Any] = [now, *queues, *left_out, *map(_like, request.include), *map(_like, request.exclude)]
    params.append(alone)
    return (len(queues), len(request.include), len(request.exclude), len(left_out)), params


def claim(
    dialect: sql.Dialect,
    request: ClaimRequest,
    limit: int,
    alone: bool,
    now: datetime.datetime,
    paused: Collection[str] = (),
) -> sql.Op[list[Attempt]]:
    """Lease up to ``limit`` due jobs (one isolated job, if ``alone`` lets it) to the worker.

    Jobs of ``paused`` queues stay queued.
    """
    found = _filters(request, paused, now, alone)
    if found is None:
        return []
    counts, params = found
    params += [limit, request.worker_id, now + request.lease, now]
    rows = yield sql.claim(dialect, *counts), params
    return sorted((Attempt.from_row(row, now) for row in rows), key=lambda a: (-a.priority, a.job_id))


#: Due jobs with limits that one claim looks at, at least (ten per free slot, if more).
LIMITED_WINDOW = 100


def claim_limited(
    dialect: sql.Dialect,
    request: ClaimRequest,
    limit: int,
    alone: bool,
    clock: Callable[[], datetime.datetime],
    paused: Collection[str] = (),
) -> sql.Op[list[Attempt]]:
    """Lease up to ``limit`` due jobs with limits, as many as their keys' limits allow.

    Run in one transaction. On PostgreSQL the keys of the first due jobs are locked first, in
    order, so that claimers of a key count its running jobs and recent starts one at a time,
    each seeing the claims committed before; the time of the claim (its jobs' ``started``) is
    read once the keys are held, so that starts follow the order of the claims. On SQLite the
    claim is one statement, and the database's only writer while it runs.
    """
    now = clock()
    found = _filters(request, paused, now, alone)
    if found is None:
        return []
    counts, filters = found
    cutoffs = [now - datetime.timedelta(seconds=seconds) for seconds in (1, 60, 3600)]
    window = max(LIMITED_WINDOW, 10 * limit)
    lock = sql.lock_limit_keys(dialect)
    keys: list[Any] = []
    if lock is not None:
        rows = yield sql.limited_keys(dialect, *counts), [*filters, *cutoffs, window]
        if not rows:
            return []
        keys = [[row[0] for row in rows]]
        yield lock, keys
        now = clock()
        cutoffs = [now - datetime.timedelta(seconds=seconds) for seconds in (1, 60, 3600)]
        filters[0] = now
    statement = sql.claim_limited(dialect, *counts, keys=bool(keys))
    params = [*filters, *keys, *cutoffs, window, *cutoffs, limit, request.worker_id, now + request.lease, now]
    rows = yield statement, params
    return sorted((Attempt.from_row(row, now) for row in rows), key=lambda a: (-a.priority, a.job_id))


def heartbeat(
    dialect: sql.Dialect, attempts: Sequence[Attempt], worker_id: str, until: datetime.datetime
) -> sql.Op[set[int]]:
    """Extend the leases of ``attempts``; return the ids of the jobs this worker still holds."""
    rows = yield (
        sql.heartbeat(dialect),
        [until, _mine([(a.job_id, a.number, None) for a in attempts]), worker_id],
    )
    return {row[0] for row in rows}


def complete(
    dialect: sql.Dialect, finished: Sequence[tuple[Attempt, Any]], worker_id: str, now: datetime.datetime
) -> sql.Op[set[int]]:
    """Mark attempts succeeded with their (JSON-ready) results; return the job ids it held.

    A group member that finishes may release its group's final job, in the same transaction.
    """
    done = [(a.job_id, a.number, None if result is None else json.dumps(result)) for a, result in finished]
    rows = yield sql.complete(dialect), [now, _mine(done), worker_id]
    for group_id in sorted({row[1] for row in rows if row[1] is not None}):
        yield from release_final(dialect, group_id, now)
    yield from settle(dialect, [row[0] for row in rows if row[2]], now)
    return {row[0] for row in rows}


def lost(dialect: sql.Dialect, attempts: Sequence[Attempt], worker_id: str) -> sql.Op[dict[int, str | None]]:
    """Those of ``attempts`` that no longer hold their jobs, with each job's status now."""
    rows = yield sql.lost(dialect), [_mine([(a.job_id, a.number, None) for a in attempts]), worker_id]
    return {row[0]: row[1] for row in rows}


def cancel(
    dialect: sql.Dialect,
    job_ids: Sequence[int],
    by: str,
    now: datetime.datetime,
    *,
    running_too: bool = True,
    why: str | None = None,
) -> sql.Op[list[int]]:
    """Cancel the unfinished jobs among ``job_ids``, with an Error row each saying who did.

    A running job is cancelled too, unless not ``running_too``: its worker's fenced writes
    match nothing from then on, and on PostgreSQL a NOTIFY, sent on commit, tells the worker
    to stop it. A group member may release its group's final job; the jobs that run after a
    cancelled one are cancelled too. ``why`` replaces the Error rows' message for jobs that
    had not started. Returns the ids cancelled.
    """
    if not job_ids:
        return []
    locked = yield sql.lock_unfinished(dialect, len(job_ids)), list(job_ids)
    if not running_too:
        locked = [row for row in locked if row[1] != "running"]
    if not locked:
        return []
    ids = [row[0] for row in locked]
    running = [row[0] for row in locked if row[1] == "running"]
    rows = yield sql.cancel(dialect, len(ids)), [now, *ids]
    kind = class_path(JobCancelled)
    pending = sorted(set(ids) - set(running))
    if pending:
        message = why or f"cancelled by {by} before it ran"
        yield sql.cancel_errors(len(pending)), [kind, message, now, *pending]
    if running:
        # The row does not say whether the job is a coroutine: the message holds for both kinds.
        message = (
            f"cancelled by {by} while it ran: a sync job's work rolls back; a coroutine job is "
            "stopped at its next await, and what it wrote until then stays committed"
        )
        yield sql.cancel_errors(len(running)), [kind, message, now, *running]
        notify = sql.notify_cancelled(dialect)
        if notify is not None:
            yield notify, [",".join(map(str, running))]
    for group_id in sorted({row[1] for row in rows if row[1] is not None}):
        yield from release_final(dialect, group_id, now)
    yield from settle(dialect, [row[0] for row in rows if row[2]], now)
    return ids


def settle(dialect: sql.Dialect, finished: Sequence[int], now: datetime.datetime) -> sql.Op[None]:
    """Settle the waiting jobs that run after these jobs, which just finished (see ``settle_waiting``)."""
    if not finished:
        return
    rows = yield sql.waiting_dependents(dialect, len(finished)), sorted(finished)
    yield from settle_waiting(dialect, [row[0] for row in rows], now)


def settle_waiting(dialect: sql.Dialect, waiting: Sequence[int], now: datetime.datetime) -> sql.Op[None]:
    """Queue the waiting jobs whose every prerequisite succeeded; cancel those that wait on a failure.

    A job that runs after one that failed for good, was cancelled or was deleted before it
    succeeded can never run: it is cancelled, with an Error row naming that job (or saying it
    was deleted), and so are the jobs that run after it.
    Run with the waiting jobs locked (``waiting_dependents``), in one transaction.
    """
    if not waiting:
        return
    yield sql.release_dependents(len(waiting)), list(waiting)
    doomed = yield sql.doomed_dependents(len(waiting)), list(waiting)
    first: dict[int, tuple[int, str, str]] = {}
    for job_id, prerequisite, name, status in doomed:
        first.setdefault(job_id, (prerequisite, name, status))
    for job_id, (prerequisite, name, status) in first.items():
        if prerequisite is None:
            why = "cancelled because a job it runs after was deleted before it succeeded"
            yield from cancel(dialect, [job_id], "a deleted job", now, why=why)
            continue
        ended = "failed for good" if status == "failed" else "was cancelled"
        why = f"cancelled because job {prerequisite} ({name}), which it runs after, {ended}"
        yield from cancel(dialect, [job_id], f"job {prerequisite}", now, why=why)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What becomes of a job after an attempt that did not succeed."""

    give_up: bool
    run_after: datetime.datetime
    #: Lower the job's priority by one (a retry after a failure).
    lower: bool = False
    #: The attempt does not count against ``max_attempts``.
    excuse: bool = False
    #: The next attempt runs alone in its worker.
    isolated: bool = False


def verdict(
    attempt: Attempt,
    settings: QueueSettings,
    now: datetime.datetime,
    *,
    final: bool = False,
    retry_now: bool = False,
    excuse: bool = False,
) -> Verdict:
    """Retry or give up: pure, from the attempt's counts and the back-off policy.

    ``final`` gives up at once (the job can never succeed). ``excuse`` requeues now without
    charging the attempt, and isolates the job. ``retry_now`` skips the back-off (the failure
    was not the job's: its connection died).
    """
    if excuse:
        return Verdict(give_up=False, run_after=now, excuse=True, isolated=True)
    if final or attempt.charged >= attempt.max_attempts:
        return Verdict(give_up=True, run_after=now)
    delay = 0.0 if retry_now else retry_delay(attempt.charged, settings)
    return Verdict(give_up=False, run_after=now + datetime.timedelta(seconds=delay), lower=True)


def fail(
    dialect: sql.Dialect,
    attempt: Attempt,
    error: ErrorInfo | None,
    worker_id: str,
    decided: Verdict,
    now: datetime.datetime,
    *,
    expired: bool = False,
) -> sql.Op[bool]:
    """End an attempt that did not succeed as ``decided``, with an Error row when ``error``.

    False when the attempt no longer held its job (nothing is written). With ``expired``
    (a rescue) the job's lease must also have run out.
    """
    mine = _mine([(attempt.job_id, attempt.number, None)])
    tail = [now] if expired else []
    if decided.give_up:
        rows = yield sql.give_up(dialect, expired=expired), [now, mine, worker_id, *tail]
    else:
        params = [
            decided.run_after,
            decided.lower,
            int(decided.excuse),
            decided.isolated,
            mine,
            worker_id,
            *tail,
        ]
        rows = yield sql.requeue(dialect, expired=expired), params
    if not rows:
        return False
    if error is not None:
        error_row = [
            attempt.job_id,
            attempt.number,
            error.exception,
            error.message,
            error.traceback,
            worker_id,
        ]
        yield sql.insert_error(dialect), [*error_row, now]
    if decided.give_up and rows[0][1] is not None:
        yield from release_final(dialect, rows[0][1], now)
    if decided.give_up and rows[0][2]:
        yield from settle(dialect, [attempt.job_id], now)
    return True


def snooze(
    dialect: sql.Dialect, attempt: Attempt, worker_id: str, run_after: datetime.datetime
) -> sql.Op[bool]:
    """Requeue a job that snoozed, its attempt excused; False if it was no longer held."""
    rows = yield sql.snooze(dialect), [run_after, _mine([(attempt.job_id, attempt.number, None)]), worker_id]
    return bool(rows)


def release(dialect: sql.Dialect, attempt: Attempt, worker_id: str, now: datetime.datetime) -> sql.Op[bool]:
    """Give a job back to the queue, its attempt excused (a clean stop); no Error row."""
    decided = Verdict(give_up=False, run_after=now, excuse=True, isolated=attempt.isolated)
    return (yield from fail(dialect, attempt, None, worker_id, decided, now))


def expired(
    dialect: sql.Dialect, worker_id: str, now: datetime.datetime
) -> sql.Op[list[tuple[Attempt, str, int]]]:
    """Jobs whose lease ran out, held by other workers: (attempt, lost worker, its other jobs)."""
    rows = yield sql.expired(dialect), [now, worker_id, RESCUE_BATCH]
    per_worker = Counter(row[4] for row in rows)
    found = []
    for job_id, attempts, excused, max_attempts, locked_by, isolated, group_id in rows:
        attempt = Attempt(
            job_id, attempts, "", None, None, excused=excused, max_attempts=max_attempts,
            group_id=group_id, isolated=bool(isolated),
        )  # fmt: skip
        found.append((attempt, locked_by, per_worker[locked_by] - 1))
    return found


def rescue(
    dialect: sql.Dialect,
    attempt: Attempt,
    lost_worker: str,
    neighbours: int,
    rescuer: str,
    settings: QueueSettings,
    now: datetime.datetime,
) -> sql.Op[bool]:
    """Requeue or fail one job whose worker was lost, charging the attempt to its cause.

    A job that ran alone (isolated, or the only job its worker held) is charged: its worker
    most likely died of it. A job that shared its worker cannot be told from its neighbours:
    its attempt is excused and it runs alone next time, so that a second loss is charged to
    the job that causes it and to no other.
    """
    if neighbours == 0 and not attempt.isolated:
        # The rows this rescuer read may be the last of the lost worker's: another rescuer may
        # have dealt with its other jobs since (each job is rescued in a transaction of its
        # own). Their WorkerLost rows say so: any job it rescued was in this rescuer's read, or
        # its row is committed by now.
        rows = yield sql.rescued_elsewhere(dialect), [lost_worker, class_path(WorkerLost), attempt.job_id]
        neighbours = rows[0][0]
    shared = neighbours > 0 and not attempt.isolated
    decided = verdict(attempt, settings, now, retry_now=True, excuse=shared)
    if shared:
        consequence = (
            f"it shared the worker with {neighbours} other job(s), so the attempt is excused "
            "and its next attempt runs alone"
        )
    elif decided.give_up:
        consequence = "it ran alone, so the attempt is charged; no attempts are left"
    else:
        consequence = "it ran alone, so the attempt is charged"
    error = ErrorInfo.of(
        WorkerLost,
        f"worker {lost_worker} stopped renewing its lease on attempt {attempt.number} and was "
        f"presumed dead (killed, crashed or stalled); rescued by {rescuer}; {consequence}",
    )
    return (yield from fail(dialect, attempt, error, lost_worker, decided, now, expired=True))


def settle_unsettled(dialect: sql.Dialect, now: datetime.datetime) -> sql.Op[list[int]]:
    """Settle waiting jobs that no finishing job will settle any more; return their ids.

    A completion that did not know of a dependent added while its job ran settles it in a
    second transaction; a worker killed between the two leaves the dependent for this. A
    prerequisite deleted before it succeeded leaves its dependents for this too (they are
    cancelled), and so does a group whose last unfinished members, or itself, were deleted
    (its final job is queued, as the group rule says).
    """
    rows = yield sql.unsettled(dialect), [RESCUE_BATCH]
    waiting = [row[0] for row in rows]
    yield from settle_waiting(dialect, waiting, now)
    finals = yield sql.unreleased_finals(dialect), [RESCUE_BATCH]
    for job_id, group_id in finals:
        if group_id is None:
            released = bool((yield sql.release_orphan(), [now, job_id]))
        else:
            released = yield from release_final(dialect, group_id, now)
        if released:
            waiting.append(job_id)
    return waiting
