"""The queue's operations: claim, heartbeat, complete, fail, release and rescue a job.

Each operation is written once, as a sequence of the statements of ``statements`` (a
generator that yields a statement and receives its rows). The same sequence runs on one of
Django's connections (``drivers.django.run_on``: a sync job's completion inside its own
transaction, the queue's bookkeeping on SQLite) and on the worker's own asyncio PostgreSQL
connection (``drivers.psycopg.PsycopgConnector``). What the store decides (retry or give up, excuse or charge)
is pure and lives here too, beside the statements it chooses.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any

from aio_async.backoff import retry_delay
from aio_async.conf import QueueSettings
from aio_async.errors import JobCancelled, WorkerLost
from aio_async.store import statements as sql
from aio_async.store.dialects import Dialect
from aio_async.store.statements import Op
from aio_async.values import Attempt, AttemptEnd, ClaimRequest, ErrorInfo, attempt_end, class_path

__all__ = [
    "Verdict",
    "cancel",
    "claim",
    "claim_after",
    "claim_limited",
    "complete",
    "fail",
    "heartbeat",
    "lost",
    "make_due",
    "make_final",
    "release",
    "release_final",
    "rescue",
    "retry",
    "settle",
    "settle_unsettled",
    "settle_waiting",
    "snooze",
    "verdict",
]

#: Expired jobs handled per rescue pass; each in a transaction of its own.
RESCUE_BATCH = 100


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
    dialect: Dialect,
    request: ClaimRequest,
    limit: int,
    alone: bool,
    now: datetime.datetime,
    paused: Collection[str] = (),
) -> Op[list[Attempt]]:
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


def claim_after(
    dialect: Dialect,
    request: ClaimRequest,
    limit: int,
    alone: bool,
    now: datetime.datetime,
    frontier: Sequence[tuple[str, int, datetime.datetime, int]],
) -> Op[list[Attempt]]:
    """Lease up to ``limit`` due jobs that lie past the worker's ``frontier``.

    ``frontier``: for each queue and priority, highest priority first, the (queue, priority,
    run_after, id) its claims reached. See ``sql.claim_after``: the caller sweeps with
    ``claim`` now and then.
    """
    if not frontier:
        return []
    include, exclude = [*map(_like, request.include)], [*map(_like, request.exclude)]
    params: list[Any] = []
    for queue, priority, run_after, job_id in frontier:
        params += [now, queue, *include, *exclude, alone, priority, run_after, job_id, limit]
    params += [limit, request.worker_id, now + request.lease, now]
    rows = yield sql.claim_after(dialect, len(include), len(exclude), len(frontier)), params
    return sorted((Attempt.from_row(row, now) for row in rows), key=lambda a: (-a.priority, a.job_id))


#: Due jobs with limits that one claim looks at, at least (ten per free slot, if more).
LIMITED_WINDOW = 100


def claim_limited(
    dialect: Dialect,
    request: ClaimRequest,
    limit: int,
    alone: bool,
    clock: Callable[[], datetime.datetime],
    paused: Collection[str] = (),
) -> Op[list[Attempt]]:
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
    keys: list[Any] = []
    if dialect.advisory_locks:
        rows = yield sql.limited_keys(dialect, *counts), [*filters, *cutoffs, window]
        if not rows:
            return []
        keys = [[row[0] for row in rows]]
        yield sql.lock_limit_keys(), keys
        now = clock()
        cutoffs = [now - datetime.timedelta(seconds=seconds) for seconds in (1, 60, 3600)]
        filters[0] = now
    statement = sql.claim_limited(dialect, *counts, keys=bool(keys))
    params = [*filters, *keys, *cutoffs, window, *cutoffs, limit, request.worker_id, now + request.lease, now]
    rows = yield statement, params
    return sorted((Attempt.from_row(row, now) for row in rows), key=lambda a: (-a.priority, a.job_id))


def heartbeat(
    dialect: Dialect, attempts: Sequence[Attempt], worker_id: str, until: datetime.datetime
) -> Op[set[int]]:
    """Extend the leases of ``attempts``; return the ids of the jobs this worker still holds."""
    rows = yield (
        sql.heartbeat(dialect),
        [until, _mine([(a.job_id, a.number, None) for a in attempts]), worker_id],
    )
    return {row[0] for row in rows}


def complete(
    dialect: Dialect, finished: Sequence[tuple[Attempt, Any]], worker_id: str, now: datetime.datetime
) -> Op[set[int]]:
    """Mark attempts succeeded with their (JSON-ready) results; return the job ids it held.

    A group member that finishes may release its group's final job, in the same transaction.
    """
    done = [(a.job_id, a.number, None if result is None else json.dumps(result)) for a, result in finished]
    rows = yield sql.complete(dialect), [now, _mine(done), worker_id]
    for group_id in sorted({row[1] for row in rows if row[1] is not None}):
        yield from release_final(dialect, group_id, now)
    yield from settle(dialect, [row[0] for row in rows if row[2]], now)
    return {row[0] for row in rows}


def lost(dialect: Dialect, attempts: Sequence[Attempt], worker_id: str) -> Op[dict[int, str | None]]:
    """Those of ``attempts`` that no longer hold their jobs, with each job's status now."""
    rows = yield sql.lost(dialect), [_mine([(a.job_id, a.number, None) for a in attempts]), worker_id]
    return {row[0]: row[1] for row in rows}


def cancel(
    dialect: Dialect,
    job_ids: Sequence[int],
    by: str,
    now: datetime.datetime,
    *,
    running_too: bool = True,
    why: str | None = None,
) -> Op[list[int]]:
    """Cancel the unfinished jobs among ``job_ids``, with an Error row each saying who did.

    A running or suspended job is cancelled too, unless not ``running_too``: a running job's
    worker's fenced writes match nothing from then on, and on PostgreSQL a NOTIFY, sent on
    commit, tells the worker to stop it. A group member may release its group's final job;
    the jobs that run after a cancelled one are cancelled too. ``why`` replaces the Error
    rows' message for jobs that had not started. Returns the ids cancelled.
    """
    if not job_ids:
        return []
    locked = yield sql.lock_unfinished(dialect, len(job_ids)), list(job_ids)
    if not running_too:
        locked = [row for row in locked if row[1] not in ("running", "suspended")]
    if not locked:
        return []
    ids = [row[0] for row in locked]
    running = [row[0] for row in locked if row[1] == "running"]
    suspended = [row[0] for row in locked if row[1] == "suspended"]
    rows = yield sql.cancel(dialect, len(ids)), [now, *ids]
    kind = class_path(JobCancelled)
    pending = sorted(set(ids) - set(running) - set(suspended))
    if pending:
        message = why or f"cancelled by {by} before it ran"
        yield sql.cancel_errors(len(pending)), [kind, message, now, *pending]
    if suspended:
        # It ran until a durable sleep or wait: what its steps committed stays committed.
        message = f"cancelled by {by} while it was suspended: the steps it committed stay committed"
        yield sql.cancel_errors(len(suspended)), [kind, message, now, *suspended]
    if running:
        # The row does not say whether the job is a coroutine: the message holds for both kinds.
        message = (
            f"cancelled by {by} while it ran: a sync job's work rolls back; a coroutine job is "
            "stopped at its next await, and what it wrote until then stays committed"
        )
        yield sql.cancel_errors(len(running)), [kind, message, now, *running]
        if dialect.notifies:
            yield sql.notify_cancelled(), [",".join(map(str, running))]
    for group_id in sorted({row[1] for row in rows if row[1] is not None}):
        yield from release_final(dialect, group_id, now)
    yield from settle(dialect, [row[0] for row in rows if row[2]], now)
    return ids


def settle(dialect: Dialect, finished: Sequence[int], now: datetime.datetime) -> Op[None]:
    """Settle the waiting jobs that run after these jobs, which just finished (see ``settle_waiting``)."""
    if not finished:
        return
    rows = yield sql.waiting_dependents(dialect, len(finished)), sorted(finished)
    yield from settle_waiting(dialect, [row[0] for row in rows], now)


def settle_waiting(dialect: Dialect, waiting: Sequence[int], now: datetime.datetime) -> Op[None]:
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
    dialect: Dialect,
    attempt: Attempt,
    error: ErrorInfo | None,
    worker_id: str,
    decided: Verdict,
    now: datetime.datetime,
    *,
    expired: bool = False,
) -> Op[bool]:
    """End an attempt that did not succeed as ``decided``, with an Error row when ``error``.

    An attempt that puts the job back in the queue is recorded (``record_attempt``) in the
    same transaction; one that fails the job for good needs no record, the job's row holds it.

    False when the attempt no longer held its job (nothing is written). With ``expired``
    (a rescue) the job's lease must also have run out.
    """
    mine = _mine([(attempt.job_id, attempt.number, None)])
    tail = [now] if expired else []
    recorded: sql.Rows = []
    if decided.give_up:
        rows = yield sql.give_up(dialect, expired=expired), [now, mine, worker_id, *tail]
    else:
        # The job goes back to the queue: its row will forget this attempt, so record it first.
        ended = attempt_end(error.exception if error else None, error.message if error else "", gave_up=False)
        record = [now, ended.value, mine, worker_id, *tail]
        recorded = yield sql.record_attempt(dialect, expired=expired), record
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
        for row in recorded:  # another writer ended the attempt between the two statements
            yield sql.forget_attempt(), [row[0]]
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
    dialect: Dialect,
    attempt: Attempt,
    worker_id: str,
    run_after: datetime.datetime,
    now: datetime.datetime,
) -> Op[bool]:
    """Requeue a job that snoozed, its attempt excused and recorded; False if it was no longer held.

    Run in one transaction.
    """
    mine = _mine([(attempt.job_id, attempt.number, None)])
    recorded = yield sql.record_attempt(dialect), [now, AttemptEnd.SNOOZED.value, mine, worker_id]
    rows = yield sql.snooze(dialect), [run_after, mine, worker_id]
    if not rows:
        for row in recorded:
            yield sql.forget_attempt(), [row[0]]
    return bool(rows)


def release(dialect: Dialect, attempt: Attempt, worker_id: str, now: datetime.datetime) -> Op[bool]:
    """Give a job back to the queue, its attempt excused (a clean stop); no Error row."""
    decided = Verdict(give_up=False, run_after=now, excuse=True, isolated=attempt.isolated)
    return (yield from fail(dialect, attempt, None, worker_id, decided, now))


def expired(dialect: Dialect, worker_id: str, now: datetime.datetime) -> Op[list[tuple[Attempt, str, int]]]:
    """Jobs whose lease ran out, held by other workers: (attempt, lost worker, its other jobs)."""
    rows = yield sql.expired(dialect), [now, worker_id, worker_id, RESCUE_BATCH]
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
    dialect: Dialect,
    attempt: Attempt,
    lost_worker: str,
    neighbours: int,
    rescuer: str,
    settings: QueueSettings,
    now: datetime.datetime,
) -> Op[bool]:
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


def settle_unsettled(dialect: Dialect, now: datetime.datetime) -> Op[list[int]]:
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


def release_final(dialect: Dialect, group_id: int, now: datetime.datetime) -> Op[bool]:
    """The group rule, as statements: queue the final job once every other member has finished.

    The group's row is locked first, so that two members finishing at once in two
    transactions cannot each see the other unfinished and both leave the final job waiting.
    Every writer that finishes a group member runs this in the member's transaction.
    """
    rows = yield sql.lock_group(dialect), [group_id]
    if not rows or rows[0][0] is None:
        return False
    final = rows[0][0]
    released = yield sql.release_final(dialect), [now, final, group_id, final]
    return bool(released)


def make_final(dialect: Dialect, group_id: int, job_id: int, now: datetime.datetime) -> Op[bool]:
    """Make a queued job its group's final job: it waits until every other member has finished.

    The group's row is locked first (as ``release_final`` does); the final job is queued at
    once if every other member has finished already. False, with nothing written, when the
    job is no longer queued (it has started).
    """
    yield sql.lock_group(dialect), [group_id]
    waiting = yield sql.make_waiting(), [job_id]
    if not waiting:
        return False
    yield sql.set_final(), [job_id, group_id]
    yield from release_final(dialect, group_id, now)
    return True


def retry(
    dialect: Dialect, job_ids: Sequence[int], states: Sequence[str], now: datetime.datetime
) -> Op[list[int]]:
    """Queue the jobs among ``job_ids`` in ``states`` to run now, a failed one with one more attempt.

    A finished job's last attempt is recorded first (its row forgets it). Run in one transaction.
    """
    if not job_ids:
        return []
    yield sql.record_retried(len(job_ids), len(states)), [*job_ids, *states]
    rows = yield sql.retry(len(job_ids), len(states)), [now, *job_ids, *states]
    return [row[0] for row in rows]


def make_due(dialect: Dialect, queues: Sequence[str], now: datetime.datetime) -> Op[None]:
    """Make the queued jobs of ``queues`` (empty: every queue) that are due later due now (tests)."""
    yield sql.make_due(len(queues)), [now, now, *queues]
