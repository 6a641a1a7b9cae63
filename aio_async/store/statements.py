"""Every statement aio_async writes by hand, each named, for PostgreSQL and SQLite.

Nothing here runs a query: each function returns the text of one statement for a dialect,
with ``%s`` placeholders, and says what it does and which parameters it takes, in order.
The operations of ``store.operations`` (and the store's other modules) yield them, and the
drivers run them on Django's connection or on the worker's own asyncio connection. The
migrations keep their own DDL: a migration is frozen history and must not change when this
module does.

Two definitions matter most and exist once each:

- ``FENCE``: a write that ends or extends an attempt matches a job only while it is still
  running under the attempt number and the worker that claimed it (DESIGN promise 4).
- ``SUCCEEDED``: how a job is marked succeeded, with its result.

Fenced writes take their jobs as one JSON parameter, ``[[id, attempt, value], ...]``, read
as the rows of ``mine``: a sync job's completion is the same statement as a batch of a
hundred coroutine jobs' completions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

from aio_async.store.dialects import Dialect
from aio_async.store.tables import ATTEMPT, DEPENDENCY, ERROR, EVENT, GROUP, JOB, STEP

__all__ = [
    "ATTEMPT_CAP",
    "CANCEL_CHANNEL",
    "FENCE",
    "QUEUES_CHANNEL",
    "REPLACED",
    "SUCCEEDED",
    "MakeOp",
    "Op",
    "Rows",
    "Statement",
    "cancel",
    "cancel_errors",
    "claim",
    "claim_after",
    "claim_limited",
    "complete",
    "count_prunable",
    "delete_attempts",
    "delete_dependencies",
    "delete_empty_groups",
    "delete_errors",
    "delete_events",
    "delete_jobs",
    "delete_old_ticks",
    "delete_steps",
    "doomed_dependents",
    "end_sleeps",
    "expire_unique",
    "expired",
    "find_event",
    "forget_attempt",
    "forget_steps",
    "forget_worker",
    "give_up",
    "heartbeat",
    "insert_error",
    "insert_event",
    "insert_jobs",
    "insert_tick",
    "keeps_unique",
    "limited_keys",
    "lock_event_key",
    "lock_group",
    "lock_limit_keys",
    "lock_unfinished",
    "lost",
    "make_due",
    "make_waiting",
    "mark_prerequisites",
    "notify_cancelled",
    "notify_queues",
    "oldest_unfinished",
    "paused_queues",
    "pickup_latencies",
    "prunable",
    "queue_counts",
    "read_steps",
    "record_attempt",
    "record_retried",
    "register_worker",
    "release_dependents",
    "release_final",
    "release_orphan",
    "replace_unique",
    "requeue",
    "rescued_elsewhere",
    "retry",
    "save_held_steps",
    "save_step",
    "set_final",
    "snooze",
    "suspend",
    "unique_holders",
    "unlink_finals",
    "unreleased_finals",
    "unsettled",
    "waiting_dependents",
    "wake_due",
    "wake_waiting",
]

_R = TypeVar("_R")


#: Counters stop here rather than overflow a 32-bit column: a forged row with an absurd
#: attempt count is claimed, refused and failed like any other bad row, alone.
ATTEMPT_CAP = 2_000_000_000
#: Retries lower a job's priority by one, down to this floor.
PRIORITY_FLOOR = -1_000_000

#: The PostgreSQL channel on which ``cancel()`` tells workers which running jobs it cancelled
#: (the payload: their ids, comma-separated), sent in its transaction, so delivered on commit.
CANCEL_CHANNEL = "aio_async_cancel"

FENCE = (
    f"{JOB}.id = mine.id AND {JOB}.status = 'running' "
    f"AND {JOB}.attempts = mine.attempt AND {JOB}.locked_by = %s"
)


def keeps_unique(status: str) -> str:
    """The assignment that clears a unique job's key as it moves to ``status``, unless it counts there."""
    return f"unique_key = CASE WHEN {JOB}.unique_states LIKE '%%{status}%%' THEN {JOB}.unique_key END"


SUCCEEDED = "status = 'succeeded', result = {result}, finished = %s, locked_until = NULL, " + keeps_unique(
    "succeeded"
)
_UNFINISHED = "('waiting', 'queued', 'running', 'suspended')"


#: The columns a claim returns, in this order (``Attempt`` in the store reads them).
CLAIMED = (
    "id",
    "name",
    "args",
    "kwargs",
    "queue",
    "priority",
    "attempts",
    "excused",
    "max_attempts",
    "timeout",
    "group_id",
    "isolated",
    "has_dependents",
    "limit_key",
    "run_after",
)


def _claimable(queues: int, include: int, exclude: int, paused: int = 0) -> list[str]:
    """The conditions every claim puts on a queued job: due, in a queue served, names matched.

    Parameters: now, each of ``queues`` queue names, ``paused`` queue names (those left out,
    when every queue is served), ``include`` name patterns, ``exclude`` name patterns, alone
    (may an isolated job be taken).
    """
    where = ["status = 'queued'", "run_after <= %s"]
    if queues:
        where.append(f"queue IN ({', '.join(['%s'] * queues)})")
    if paused:
        where.append(f"queue NOT IN ({', '.join(['%s'] * paused)})")
    if include:
        where.append("(" + " OR ".join(["name LIKE %s ESCAPE '\\'"] * include) + ")")
    where += ["name NOT LIKE %s ESCAPE '\\'"] * exclude
    where.append("(%s OR NOT isolated)")
    return where


def _lease(dialect: Dialect, picked: str) -> str:
    """Mark the jobs ``picked`` names running under a new attempt, and return ``CLAIMED``.

    ``picked`` is a CTE with id and isolated. An isolated job (its last attempt was lost with
    a worker it shared) is taken alone: if the picked rows include one, only that one is
    taken and the others stay queued. Parameters: worker id, lease end, now.
    """
    returning = ", ".join(
        dialect.json_text.format(column=f"{JOB}.{column}")
        if column in ("args", "kwargs")
        else f"{JOB}.{column}"
        for column in CLAIMED
    )
    return (
        f"UPDATE {JOB} SET status = 'running', "  # noqa: S608 - fixed fragments only
        f"attempts = attempts + CASE WHEN attempts < {ATTEMPT_CAP} THEN 1 ELSE 0 END, "
        f"locked_by = %s, locked_until = %s, started = %s, {keeps_unique('running')} "
        "WHERE "
        + dialect.id_among.format(
            ids=f"SELECT id FROM {picked} WHERE NOT EXISTS (SELECT 1 FROM {picked} WHERE isolated) "  # noqa: S608
            f"UNION ALL SELECT min(id) FROM {picked} WHERE isolated"
        )
        + f" RETURNING {returning}"
    )


@functools.cache
def claim(dialect: Dialect, queues: int, include: int = 0, exclude: int = 0, paused: int = 0) -> str:
    """Lease the first due jobs without limits to a worker, running under a fresh attempt number.

    Parameters: those of ``_claimable``, limit, then those of ``_lease``. Returns ``CLAIMED``.
    """
    where = [*_claimable(queues, include, exclude, paused), "limit_key IS NULL"]
    return (
        f"WITH picked AS (SELECT id, isolated FROM {JOB} WHERE {' AND '.join(where)} "  # noqa: S608
        f"ORDER BY priority DESC, run_after, id LIMIT %s{dialect.skip_locked}) " + _lease(dialect, "picked")
    )


@functools.cache
def claim_after(dialect: Dialect, include: int = 0, exclude: int = 0, levels: int = 1) -> str:
    """Lease the first due jobs that lie past this worker's frontier, level by level.

    The frontier is where this worker's claims reached in each of ``levels`` queue and priority
    pairs (highest priority first): each level's branch starts its index scan at its ``(run_after, id)``
    instead of at the head of the claim index, so it never walks the entries that claimed jobs
    leave there until vacuum removes them (which a long transaction elsewhere in the database
    prevents). A job behind the frontier (a higher or new priority, a transaction that committed
    late, a row that was locked) is left to the next full claim (``claim``), the sweep.
    Parameters, for each level: those of ``_claimable`` with the level's queue, its priority, its
    run_after and id, limit; then limit, then those of ``_lease``. Returns ``CLAIMED``.
    """
    where = " AND ".join([*_claimable(1, include, exclude), "limit_key IS NULL", "priority = %s"])
    # Each level locks rows in a subquery of its own: PostgreSQL refuses FOR UPDATE in a branch
    # of a UNION, not in a subquery under one.
    branch = (
        f"SELECT id, isolated FROM (SELECT id, isolated FROM {JOB} WHERE {where} "  # noqa: S608
        f"AND (run_after, id) > (%s, %s) ORDER BY run_after, id LIMIT %s{dialect.skip_locked}) AS level"
    )
    return (
        f"WITH picked AS (SELECT id, isolated FROM ({' UNION ALL '.join([branch] * levels)}) AS past "  # noqa: S608
        "LIMIT %s) " + _lease(dialect, "picked")
    )


#: Counts for a limited job's key: the jobs running, and the jobs started within the key's
#: period (parameters: the starts of the last second, minute and hour).
_RUNNING = (
    f"(SELECT count(*) FROM {JOB} AS other "  # noqa: S608 - fixed fragments only
    "WHERE other.status = 'running' AND other.limit_key = {of}.limit_key)"
)
_STARTED = (
    f"(SELECT count(*) FROM {JOB} AS other WHERE other.rate_count IS NOT NULL "  # noqa: S608
    "AND other.limit_key = {of}.limit_key AND other.started > "
    "CASE WHEN {of}.rate_period <= 1 THEN %s WHEN {of}.rate_period <= 60 THEN %s ELSE %s END)"
)


def _under_limits(of: str) -> str:
    return (
        f"(concurrency_limit IS NULL OR concurrency_limit - {_RUNNING.format(of=of)} > 0) "
        f"AND (rate_count IS NULL OR rate_count - {_STARTED.format(of=of)} > 0)"
    )


@functools.cache
def limited_keys(dialect: Dialect, queues: int, include: int = 0, exclude: int = 0, paused: int = 0) -> str:
    """The keys of the first due jobs with limits whose keys have room, sorted (to lock them).

    Parameters: those of ``_claimable``, the starts of the last second, minute and hour,
    limit. Returns limit_key.
    """
    where = [*_claimable(queues, include, exclude, paused), "limit_key IS NOT NULL", _under_limits(JOB)]
    return (
        f"SELECT DISTINCT limit_key FROM (SELECT limit_key FROM {JOB} "  # noqa: S608
        f"WHERE {' AND '.join(where)} ORDER BY priority DESC, run_after, id LIMIT %s) AS due "
        "ORDER BY limit_key"
    )


def lock_limit_keys() -> str:
    """Hold these limit keys until the transaction ends, one claimer at a time (PostgreSQL).

    Parameter: the keys, sorted (every claimer locks in the same order). Only where the
    dialect has ``advisory_locks``: on SQLite a claim is one statement, and the database has
    one writer at a time.
    """
    return (
        "SELECT count(pg_advisory_xact_lock(8270, hashtext(key))) "
        "FROM (SELECT unnest(%s::text[]) AS key ORDER BY 1) AS keys"
    )


@functools.cache
def claim_limited(
    dialect: Dialect, queues: int, include: int = 0, exclude: int = 0, paused: int = 0, *, keys: bool = False
) -> str:
    """Lease due jobs with limits to a worker, as many as each key's limits allow.

    Every job of a key counts its key's running jobs and recent starts, and the jobs taken
    in this claim ahead of it; on PostgreSQL the claimer holds the keys' locks
    (``lock_limit_keys``) and only jobs of those keys are taken (``keys``).
    Parameters: those of ``_claimable``, the keys (with ``keys``), the starts of the last
    second, minute and hour, candidates, then again the starts of the last second, minute and
    hour, limit, then those of ``_lease``. Returns ``CLAIMED``.
    """
    where = [*_claimable(queues, include, exclude, paused), "limit_key IS NOT NULL"]
    if keys:
        where.append("limit_key = ANY(%s)")
    where.append(_under_limits(JOB))
    rank = "row_number() OVER (PARTITION BY limit_key ORDER BY priority DESC, run_after, id)"
    running = _RUNNING.format(of="ranked")
    started = _STARTED.format(of="ranked")
    return (
        "WITH candidates AS (SELECT id, isolated, priority, run_after, limit_key, concurrency_limit, "  # noqa: S608
        f"rate_count, rate_period FROM {JOB} WHERE {' AND '.join(where)} "
        f"ORDER BY priority DESC, run_after, id LIMIT %s{dialect.skip_locked}), "
        f"ranked AS (SELECT candidates.*, {rank} AS place FROM candidates), "
        "allowed AS (SELECT id, isolated FROM ranked WHERE "
        f"(concurrency_limit IS NULL OR place <= concurrency_limit - {running}) "
        f"AND (rate_count IS NULL OR place <= rate_count - {started}) "
        "ORDER BY priority DESC, run_after, id LIMIT %s) " + _lease(dialect, "allowed")
    )


def _fenced(dialect: Dialect, assignments: str, *, expired: bool = False) -> str:
    """``UPDATE … FROM mine WHERE FENCE``: every write to a running job goes through here.

    With ``expired``, the job's lease must also have run out (a rescue): one more parameter,
    now, after the worker id.
    """
    lease = f" AND ({JOB}.locked_until IS NULL OR {JOB}.locked_until < %s)" if expired else ""
    return (
        f"UPDATE {JOB} SET {assignments} FROM {dialect.mine} "  # noqa: S608 - fixed fragments only
        f"WHERE {FENCE}{lease} RETURNING {JOB}.id, {JOB}.group_id, {JOB}.has_dependents"
    )


@functools.cache
def heartbeat(dialect: Dialect) -> str:
    """Extend a worker's leases. Parameters: lease end, jobs, worker id. Returns id, group_id."""
    return _fenced(dialect, "locked_until = %s")


@functools.cache
def complete(dialect: Dialect) -> str:
    """Mark jobs succeeded with their results (``value``: JSON text or null).

    Parameters: now, jobs, worker id. Returns id, group_id of the jobs it held.
    """
    return _fenced(dialect, SUCCEEDED.format(result=dialect.json_value))


@functools.cache
def requeue(dialect: Dialect, *, expired: bool = False) -> str:
    """Put jobs back in the queue after an attempt: a retry, a release, a rescue.

    Parameters: run after, lower the priority (bool), excuse the attempt (0 or 1), isolated
    (bool), jobs, worker id (and now, when ``expired``). Returns id, group_id.
    """
    return _fenced(
        dialect,
        "status = 'queued', run_after = %s, "
        f"priority = {JOB}.priority - CASE WHEN %s AND {JOB}.priority > {PRIORITY_FLOOR} THEN 1 ELSE 0 END, "
        f"excused = {JOB}.excused + CASE WHEN {JOB}.excused < {ATTEMPT_CAP} THEN %s ELSE 0 END, "
        "isolated = %s, locked_by = '', locked_until = NULL",
        expired=expired,
    )


@functools.cache
def snooze(dialect: Dialect) -> str:
    """Put a job that snoozed back in the queue, its attempt excused, its snoozes counted.

    Parameters: run after, jobs, worker id. Returns id, group_id.
    """
    return _fenced(
        dialect,
        "status = 'queued', run_after = %s, "
        f"excused = {JOB}.excused + CASE WHEN {JOB}.excused < {ATTEMPT_CAP} THEN 1 ELSE 0 END, "
        f"locked_by = '', locked_until = NULL, meta = {dialect.snoozed_meta}",
    )


@functools.cache
def give_up(dialect: Dialect, *, expired: bool = False) -> str:
    """Mark jobs failed for good. Parameters: now, jobs, worker id (and now, when ``expired``)."""
    return _fenced(
        dialect,
        f"status = 'failed', finished = %s, locked_until = NULL, {keeps_unique('failed')}",
        expired=expired,
    )


@functools.cache
def lost(dialect: Dialect) -> str:
    """Which of a worker's attempts no longer hold their jobs, and each job's status now.

    Parameters: jobs, worker id. Returns id, status (NULL when the job was deleted). A job
    cancelled while it ran reads ``cancelled``; one whose lease was taken over, ``running``
    or whatever its new holder made of it.
    """
    return (
        f"SELECT mine.id, {JOB}.status FROM {dialect.mine} "  # noqa: S608 - fixed fragments only
        f"LEFT JOIN {JOB} ON {JOB}.id = mine.id WHERE NOT COALESCE(({FENCE}), FALSE)"
    )


@functools.cache
def lock_unfinished(dialect: Dialect, jobs: int) -> str:
    """Lock those of these jobs that have not finished, in id order.

    Parameters: the job ids. Returns id, status, attempts, locked_by.
    """
    return (
        f"SELECT id, status, attempts, locked_by FROM {JOB} WHERE id IN ({_ids(jobs)}) "  # noqa: S608
        f"AND status IN {_UNFINISHED} ORDER BY id{dialect.for_update}"
    )


@functools.cache
def cancel(dialect: Dialect, jobs: int) -> str:
    """Cancel these jobs, running ones included: a running job's worker can commit nothing more.

    Parameters: now, the job ids. Returns id, group_id, has_dependents of the jobs cancelled. Run after
    ``lock_unfinished``, in its transaction.
    """
    return (
        f"UPDATE {JOB} SET status = 'cancelled', finished = %s, locked_until = NULL, "  # noqa: S608
        f"{keeps_unique('cancelled')} WHERE id IN ({_ids(jobs)}) AND status IN {_UNFINISHED} "
        "RETURNING id, group_id, has_dependents"
    )


@functools.cache
def retry(jobs: int, states: int) -> str:
    """Queue jobs to run now, a failed one with one more attempt than it has used.

    The job's row no longer holds its last attempt (``record_retried`` recorded it first).
    Parameters: now, the job ids, the states a job may be retried from. Returns their ids.
    """
    return (
        f"UPDATE {JOB} SET status = 'queued', run_after = %s, finished = NULL, locked_by = '', "  # noqa: S608
        "max_attempts = CASE WHEN max_attempts > attempts - excused THEN max_attempts "
        "ELSE attempts - excused + 1 END "
        f"WHERE id IN ({_ids(jobs)}) AND status IN ({_ids(states)}) RETURNING id"
    )


def cancel_errors(jobs: int) -> str:
    """One Error row per cancelled job, saying why: its attempt, its worker if it ran.

    Parameters: exception, message, now, the job ids.
    """
    return (
        f"INSERT INTO {ERROR} (job_id, attempt, exception, message, traceback, worker, created) "  # noqa: S608
        f"SELECT id, attempts, %s, %s, '', locked_by, %s FROM {JOB} WHERE id IN ({_ids(jobs)})"
    )


def notify_cancelled() -> str:
    """Tell workers which running jobs were cancelled (only where the dialect ``notifies``).

    Parameter: the ids, comma-separated. Delivered when the transaction commits.
    """
    return f"SELECT pg_notify('{CANCEL_CHANNEL}', %s)"


@functools.cache
def expired(dialect: Dialect) -> str:
    """Running jobs whose lease ran out (or was never set), held by other workers.

    Each half reads through its own partial index (``aio_async_job_lease``,
    ``aio_async_job_unleased``). Parameters: now, this worker's id, this worker's id again,
    limit. Returns id, attempts, excused, max_attempts,
    locked_by, isolated, group_id: plain numbers and strings, which any row can decode.
    """
    columns = "id, attempts, excused, max_attempts, locked_by, isolated, group_id"
    return (
        f"SELECT {columns} FROM (SELECT {columns} FROM {JOB} "  # noqa: S608
        "WHERE status = 'running' AND locked_until IS NOT NULL AND locked_until < %s AND locked_by <> %s "
        f"UNION ALL SELECT {columns} FROM {JOB} "
        "WHERE status = 'running' AND locked_until IS NULL AND locked_by <> %s) AS lapsed "
        "ORDER BY id LIMIT %s"
    )


@functools.cache
def rescued_elsewhere(dialect: Dialect) -> str:
    """How many other jobs of a lost worker were rescued already (their WorkerLost rows).

    Parameters: the lost worker's id, WorkerLost's class path, the job id. Returns the count.
    """
    return f"SELECT count(*) FROM {ERROR} WHERE worker = %s AND exception = %s AND job_id <> %s"  # noqa: S608


@functools.cache
def insert_error(dialect: Dialect) -> str:
    """Record a failed attempt. Parameters: job id, attempt, exception, message, traceback, worker, now."""
    return (
        f"INSERT INTO {ERROR} (job_id, attempt, exception, message, traceback, worker, created) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, %s, %s, %s)"
    )


@functools.cache
def lock_group(dialect: Dialect) -> str:
    """Lock a group's row and read its final job. Parameter: group id. Returns final_id."""
    return f"SELECT final_id FROM {GROUP} WHERE id = %s{dialect.for_update}"  # noqa: S608


@functools.cache
def make_due(queues: int) -> str:
    """Queued jobs due later made due now (``aio_async.testing``). Parameters: now, now, the queues."""
    among = f" AND queue IN ({_ids(queues)})" if queues else ""
    return f"UPDATE {JOB} SET run_after = %s WHERE status = 'queued' AND run_after > %s{among}"  # noqa: S608


def make_waiting() -> str:
    """A queued job made to wait (a group's final job). Parameter: the job's id. Returns its id."""
    return f"UPDATE {JOB} SET status = 'waiting' WHERE id = %s AND status = 'queued' RETURNING id"  # noqa: S608


def set_final() -> str:
    """Name a group's final job. Parameters: the job's id, the group's id."""
    return f"UPDATE {GROUP} SET final_id = %s WHERE id = %s"  # noqa: S608


def release_final(dialect: Dialect) -> str:
    """Queue a group's final job if no other member is unfinished.

    Parameters: now, final job id, group id, final job id. Run after ``lock_group``, in its
    transaction. Returns the id of the job released, if it was.
    """
    return (
        f"UPDATE {JOB} SET status = 'queued', run_after = %s "  # noqa: S608
        "WHERE id = %s AND status = 'waiting' AND NOT EXISTS ("
        f"SELECT 1 FROM {JOB} AS member WHERE member.group_id = %s AND member.id <> %s "
        f"AND member.status IN {_UNFINISHED}) RETURNING id"
    )


@functools.cache
def mark_prerequisites(jobs: int) -> str:
    """Mark the jobs a new job runs after as having dependents; read their status.

    Parameters: the job ids. Returns id, status, name. The row lock it takes makes a
    prerequisite that is finishing meanwhile wait for the new job's transaction, then see its
    mark (and settle the new job); or makes the new job wait for the finish, then read it.
    """
    return (
        f"UPDATE {JOB} SET has_dependents = TRUE WHERE id IN ({_ids(jobs)}) "  # noqa: S608
        "RETURNING id, status, name"
    )


@functools.cache
def waiting_dependents(dialect: Dialect, jobs: int) -> str:
    """Lock the waiting jobs that run after any of these jobs, in id order.

    Parameters: the prerequisites' ids. Returns id.
    """
    return (
        f"SELECT id FROM {JOB} WHERE status = 'waiting' AND id IN ("  # noqa: S608
        f"SELECT job_id FROM {DEPENDENCY} WHERE after_id IN ({_ids(jobs)})) ORDER BY id{dialect.for_update}"
    )


@functools.cache
def release_dependents(jobs: int) -> str:
    """Queue those of these waiting jobs whose every prerequisite has succeeded.

    Parameters: the job ids. Returns id. Run after ``waiting_dependents``, in its transaction.
    """
    return (
        f"UPDATE {JOB} SET status = 'queued' WHERE id IN ({_ids(jobs)}) AND status = 'waiting' "  # noqa: S608
        f"AND NOT EXISTS (SELECT 1 FROM {DEPENDENCY} LEFT JOIN {JOB} AS prerequisite "
        f"ON prerequisite.id = {DEPENDENCY}.after_id WHERE {DEPENDENCY}.job_id = {JOB}.id "
        "AND (prerequisite.id IS NULL OR prerequisite.status <> 'succeeded')) RETURNING id"
    )


@functools.cache
def doomed_dependents(jobs: int) -> str:
    """Which of these waiting jobs run after a job that failed, was cancelled or was deleted unsucceeded.

    Parameters: the job ids. Returns id, the prerequisite's id, name and status, in job order
    and, per job, the jobs that still exist first (a deleted one's columns are NULL).
    """
    return (
        f"SELECT {JOB}.id, prerequisite.id, prerequisite.name, prerequisite.status FROM {JOB} "  # noqa: S608
        f"JOIN {DEPENDENCY} ON {DEPENDENCY}.job_id = {JOB}.id "
        f"LEFT JOIN {JOB} AS prerequisite ON prerequisite.id = {DEPENDENCY}.after_id "
        f"WHERE {JOB}.id IN ({_ids(jobs)}) AND {JOB}.status = 'waiting' "
        "AND (prerequisite.id IS NULL OR prerequisite.status IN ('failed', 'cancelled')) "
        f"ORDER BY {JOB}.id, CASE WHEN prerequisite.id IS NULL THEN 1 ELSE 0 END, prerequisite.id"
    )


@functools.cache
def unsettled(dialect: Dialect) -> str:
    """Waiting jobs left unsettled: no prerequisite unfinished any more, or one of them deleted.

    Parameter: limit. Returns id. (A prerequisite finished by a write that could not settle
    its dependents in the same transaction, and whose worker died before the next one; or a
    prerequisite deleted before it succeeded, which no write of a worker settles.)
    """
    return (
        f"SELECT {JOB}.id FROM {JOB} WHERE {JOB}.status = 'waiting' "  # noqa: S608
        f"AND EXISTS (SELECT 1 FROM {DEPENDENCY} WHERE {DEPENDENCY}.job_id = {JOB}.id) "
        f"AND (EXISTS (SELECT 1 FROM {DEPENDENCY} WHERE {DEPENDENCY}.job_id = {JOB}.id "
        f"AND {DEPENDENCY}.after_id IS NULL) "
        f"OR NOT EXISTS (SELECT 1 FROM {DEPENDENCY} JOIN {JOB} AS prerequisite "
        f"ON prerequisite.id = {DEPENDENCY}.after_id WHERE {DEPENDENCY}.job_id = {JOB}.id "
        f"AND prerequisite.status IN {_UNFINISHED})) ORDER BY {JOB}.id LIMIT %s{dialect.for_update}"
    )


@functools.cache
def unreleased_finals(dialect: Dialect) -> str:
    """Groups' final jobs still waiting though no other member is unfinished (members deleted).

    Parameter: limit. Returns the job's id and its group's id (NULL once the group was
    deleted). Every writer that finishes a member releases the final job; deleting the last
    unfinished members, or the group, leaves it for this.
    """
    return (
        f"SELECT {JOB}.id, {GROUP}.id FROM {JOB} LEFT JOIN {GROUP} ON {GROUP}.final_id = {JOB}.id "  # noqa: S608
        f"WHERE {JOB}.status = 'waiting' "
        f"AND NOT EXISTS (SELECT 1 FROM {DEPENDENCY} WHERE {DEPENDENCY}.job_id = {JOB}.id) "
        f"AND ({GROUP}.id IS NULL OR NOT EXISTS (SELECT 1 FROM {JOB} AS member "
        f"WHERE member.group_id = {GROUP}.id AND member.id <> {JOB}.id "
        f"AND member.status IN {_UNFINISHED})) ORDER BY {JOB}.id LIMIT %s"
    )


@functools.cache
def release_orphan() -> str:
    """Queue a waiting job whose group was deleted. Parameters: now, the job id. Returns id."""
    return (
        f"UPDATE {JOB} SET status = 'queued', run_after = %s "  # noqa: S608
        "WHERE id = %s AND status = 'waiting' RETURNING id"
    )


@functools.cache
def delete_dependencies(jobs: int) -> str:
    """Delete the dependencies of and on these jobs (before the jobs are). Parameters: the ids, twice."""
    return (
        f"DELETE FROM {DEPENDENCY} WHERE job_id IN ({_ids(jobs)}) "  # noqa: S608
        f"OR after_id IN ({_ids(jobs)})"
    )


@functools.cache
def insert_jobs(columns: Sequence[tuple[str, str]], rows: int, *, arrays: bool, unique: bool = False) -> str:
    """Write new jobs. ``columns`` are (column, database type) pairs; returns their ids.

    With ``arrays`` (PostgreSQL through psycopg 3), one row goes as a VALUES row and many as
    one binary array per column (``unnest``), so the text and its plan are the same for two
    jobs or ten thousand, and values travel bound rather than as SQL text. Otherwise the
    statement has ``rows`` VALUES rows.

    With ``unique`` (each row has a ``unique_key``), a row whose key another job holds is
    skipped, and each row written returns id, unique_key.
    """
    names = ", ".join(f'"{name}"' for name, _ in columns)
    if arrays and rows == 1:
        source = f"VALUES ({', '.join(f'%b::{kind}' for _, kind in columns)})"
    elif arrays:
        source = f"SELECT * FROM unnest({', '.join(f'%b::{kind}[]' for _, kind in columns)})"  # noqa: S608
    else:
        source = "VALUES " + ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * rows)
    if not unique:
        return f"INSERT INTO {JOB} ({names}) {source} RETURNING id"
    return (
        f"INSERT INTO {JOB} ({names}) {source} "
        "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING id, unique_key"
    )


#: What a unique call with ``on_conflict="replace"`` gives the unstarted job holding its key.
REPLACED = ("args", "kwargs", "identity", "priority", "run_after")


@functools.cache
def replace_unique() -> str:
    """Give a queued or waiting job holding a key new values of ``REPLACED``.

    Parameters: each of ``REPLACED``, the key. Returns id, unique_key.
    """
    assignments = ", ".join(f"{column} = %s" for column in REPLACED)
    return (
        f"UPDATE {JOB} SET {assignments} WHERE unique_key = %s "  # noqa: S608
        "AND status IN ('queued', 'waiting') RETURNING id, unique_key"
    )


@functools.cache
def unique_holders(keys: int) -> str:
    """The jobs holding these unique keys. Parameters: the keys. Returns id, unique_key."""
    return f"SELECT id, unique_key FROM {JOB} WHERE unique_key IN ({', '.join(['%s'] * keys)})"  # noqa: S608


@functools.cache
def expire_unique(keys: int) -> str:
    """Clear these keys on jobs added before a moment (their period is over).

    Parameters: the moment, the keys.
    """
    return (
        f"UPDATE {JOB} SET unique_key = NULL WHERE added <= %s "  # noqa: S608
        f"AND unique_key IN ({', '.join(['%s'] * keys)})"
    )


def _past_age(table: str, states: int) -> str:
    """``table``'s row is finished and past its state's age: ``states`` (state, cutoff) pairs."""
    tests = " OR ".join([f"({table}.status = %s AND {table}.finished < %s)"] * states)
    return f"COALESCE(({tests}), FALSE)"


def _prunable_where(states: int) -> str:
    return (
        "status = %s AND finished < %s AND (group_id IS NULL OR NOT EXISTS ("  # noqa: S608
        f"SELECT 1 FROM {JOB} AS member WHERE member.group_id = {JOB}.group_id "
        f"AND NOT {_past_age('member', states)}))"
    )


@functools.cache
def prunable(dialect: Dialect, states: int) -> str:
    """A batch of jobs to prune: in a state, finished before its cutoff, and not holding back a group.

    A job of a group qualifies only when every member of the group is past its own state's
    age. Parameters: state, cutoff, then ``states`` (state, cutoff) pairs, limit. Returns
    id, group_id. Rows another transaction holds are skipped.
    """
    return (
        f"SELECT id, group_id FROM {JOB} WHERE {_prunable_where(states)} "  # noqa: S608
        f"ORDER BY id LIMIT %s{dialect.skip_locked}"
    )


@functools.cache
def count_prunable(states: int) -> str:
    """How many jobs ``prunable`` would find in one state, all batches together (its parameters, no limit)."""
    return f"SELECT count(*) FROM {JOB} WHERE {_prunable_where(states)}"  # noqa: S608


def _ids(count: int) -> str:
    return ", ".join(["%s"] * count)


@functools.cache
def delete_errors(jobs: int) -> str:
    """Delete the errors of these jobs. Parameters: the job ids."""
    return f"DELETE FROM {ERROR} WHERE job_id IN ({_ids(jobs)})"  # noqa: S608


@functools.cache
def unlink_finals(jobs: int) -> str:
    """Let groups whose final job is among these jobs forget it. Parameters: the job ids."""
    return f"UPDATE {GROUP} SET final_id = NULL WHERE final_id IN ({_ids(jobs)})"  # noqa: S608


@functools.cache
def delete_jobs(jobs: int) -> str:
    """Delete these jobs. Parameters: the job ids."""
    return f"DELETE FROM {JOB} WHERE id IN ({_ids(jobs)})"  # noqa: S608


@functools.cache
def delete_empty_groups(groups: int) -> str:
    """Delete those of these groups that have no job left. Parameters: the group ids."""
    return (
        f"DELETE FROM {GROUP} WHERE id IN ({_ids(groups)}) "  # noqa: S608
        f"AND NOT EXISTS (SELECT 1 FROM {JOB} WHERE {JOB}.group_id = {GROUP}.id)"
    )


QUEUES_CHANNEL = "aio_async_queues"


def paused_queues() -> str:
    """The names of the queues that are paused. No parameters. Returns name."""
    return 'SELECT name FROM "aio_async_queue" WHERE paused'


def notify_queues() -> str:
    """Tell workers that a queue was paused or resumed (only where the dialect ``notifies``).

    Parameter: the queue's name. Delivered when the transaction commits.
    """
    return f"SELECT pg_notify('{QUEUES_CHANNEL}', %s)"


def register_worker() -> str:
    """Record a worker as alive: at its start, and with each renewal of its leases.

    Parameters: id, host, pid, queues, concurrency, started, heartbeat.
    """
    return (
        'INSERT INTO "aio_async_worker" (id, host, pid, queues, concurrency, started, heartbeat) '
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat"
    )


def forget_worker() -> str:
    """A worker that stops, or that was lost long ago. Parameters: id, the oldest heartbeat kept."""
    return 'DELETE FROM "aio_async_worker" WHERE id = %s OR heartbeat < %s'


@functools.cache
def insert_tick() -> str:
    """Record a periodic schedule's tick unless it is recorded already.

    Parameters: schedule, tick key, the tick's time. Returns the new row's id, or nothing.
    """
    return (
        'INSERT INTO "aio_async_tick" (schedule, tick, at) VALUES (%s, %s, %s) '
        "ON CONFLICT (schedule, tick) DO NOTHING RETURNING id"
    )


@functools.cache
def delete_old_ticks() -> str:
    """Delete a batch of periodic ticks older than a moment, but each schedule's latest.

    Parameters: the moment, limit. Returns their ids. (The latest tick tells a starting
    worker what it missed.)
    """
    return (
        'DELETE FROM "aio_async_tick" WHERE id IN (SELECT id FROM "aio_async_tick" AS old '
        'WHERE old.at < %s AND EXISTS (SELECT 1 FROM "aio_async_tick" AS newer '
        "WHERE newer.schedule = old.schedule AND newer.at > old.at) LIMIT %s) RETURNING id"
    )


# Operations: statement sequences ---------------------------------------------------------

#: What a statement sequence yields: the text and its parameters; it is sent back the rows.
Statement = tuple[str, Sequence[Any]]
Rows = list[tuple[Any, ...]]
#: A queue operation as a sequence of statements (sans-I/O): each ``yield`` runs one and
#: receives its rows; the return value is the operation's. The same sequence runs on Django's
#: connection (``run_on``) and on the worker's own asyncio connection.
Op = Generator[Statement, Rows, _R]
#: An operation for whichever dialect the connection that runs it speaks.
MakeOp = Callable[[Dialect], Op[_R]]


# The attempt history and the queue's figures ---------------------------------------------


@functools.cache
def record_attempt(dialect: Dialect, *, expired: bool = False) -> str:
    """Record how an attempt ended without finishing its job, from the job's row, under ``FENCE``.

    Run just before the write that requeues the job, in its transaction: the row still holds
    the attempt (its number, ``run_after``, ``started``, ``locked_by``). With ``expired``, the
    lease must have run out too, as in the rescue's requeue. Parameters: ended, outcome,
    jobs, worker id (and now, when ``expired``). Returns the new rows' ids.
    """
    lease = f" AND ({JOB}.locked_until IS NULL OR {JOB}.locked_until < %s)" if expired else ""
    return (
        f"INSERT INTO {ATTEMPT} (job_id, number, due, started, ended, worker, outcome) "  # noqa: S608
        f"SELECT {JOB}.id, {JOB}.attempts, {JOB}.run_after, {JOB}.started, %s, {JOB}.locked_by, %s "
        f"FROM {JOB}, {dialect.mine} WHERE {FENCE}{lease} RETURNING id"
    )


def forget_attempt() -> str:
    """Delete an attempt's record whose requeue found the job no longer held. Parameter: its id."""
    return f"DELETE FROM {ATTEMPT} WHERE id = %s"  # noqa: S608


@functools.cache
def record_retried(jobs: int, states: int) -> str:
    """Record the last attempt of finished jobs that ``retry`` queues again (their rows forget it).

    Its outcome is the job's status (failed, cancelled). Parameters: the job ids, the states a
    job may be retried from. Run just before ``retry``, in its transaction.
    """
    return (
        f"INSERT INTO {ATTEMPT} (job_id, number, due, started, ended, worker, outcome) "  # noqa: S608
        f"SELECT id, attempts, run_after, started, finished, locked_by, status FROM {JOB} "
        f"WHERE id IN ({_ids(jobs)}) AND status IN ({_ids(states)}) "
        "AND status IN ('failed', 'cancelled') AND attempts > 0 AND locked_by <> ''"
    )


@functools.cache
def delete_attempts(jobs: int) -> str:
    """Delete the attempt records of these jobs. Parameters: the job ids."""
    return f"DELETE FROM {ATTEMPT} WHERE job_id IN ({_ids(jobs)})"  # noqa: S608


@functools.cache
def queue_counts(dialect: Dialect) -> str:
    """Per queue: due, scheduled, waiting, running, suspended; succeeded, failed, requeued since a moment.

    Each part reads through a partial index, so that the cost follows the unfinished jobs and
    those of the window, never the finished history: queued and waiting jobs through
    ``aio_async_job_pending``, running ones through ``aio_async_job_lease`` (and
    ``aio_async_job_unleased``, for a running row without a lease), suspended ones through
    ``aio_async_job_suspended``, succeeded and failed ones through ``aio_async_job_succeeded``
    and ``aio_async_job_failed`` (on ``finished``), requeued attempts through
    ``aio_async_attempt_ended`` (an attempt that suspended its job put nothing back in the
    queue: it is not counted). Parameters: now, now, now, since, since, since. Returns queue,
    due, scheduled, waiting, running, suspended, succeeded, failed, requeued, the
    ``run_after`` of the oldest due job.
    """
    return (
        "SELECT queue, sum(due), sum(scheduled), sum(waiting), sum(running), sum(suspended), "  # noqa: S608
        "sum(succeeded), sum(failed), sum(requeued), min(oldest) FROM ("
        "SELECT queue, CASE WHEN status = 'queued' AND run_after <= %s THEN 1 ELSE 0 END AS due, "
        "CASE WHEN status = 'queued' AND run_after > %s THEN 1 ELSE 0 END AS scheduled, "
        "CASE WHEN status = 'waiting' THEN 1 ELSE 0 END AS waiting, 0 AS running, 0 AS suspended, "
        "0 AS succeeded, 0 AS failed, 0 AS requeued, "
        "CASE WHEN status = 'queued' AND run_after <= %s THEN run_after END "
        f"AS oldest FROM {JOB} WHERE status IN ('queued', 'waiting') "
        f"UNION ALL SELECT queue, 0, 0, 0, 1, 0, 0, 0, 0, NULL FROM {JOB} WHERE status = 'running' "
        "AND locked_until IS NOT NULL "
        f"UNION ALL SELECT queue, 0, 0, 0, 1, 0, 0, 0, 0, NULL FROM {JOB} WHERE status = 'running' "
        "AND locked_until IS NULL "
        f"UNION ALL SELECT queue, 0, 0, 0, 0, 1, 0, 0, 0, NULL FROM {JOB} WHERE status = 'suspended' "
        f"UNION ALL SELECT queue, 0, 0, 0, 0, 0, 1, 0, 0, NULL FROM {JOB} "
        "WHERE status = 'succeeded' AND finished >= %s "
        f"UNION ALL SELECT queue, 0, 0, 0, 0, 0, 0, 1, 0, NULL FROM {JOB} "
        "WHERE status = 'failed' AND finished >= %s "
        f"UNION ALL SELECT {JOB}.queue, 0, 0, 0, 0, 0, 0, 0, 1, NULL FROM {ATTEMPT} "
        f"JOIN {JOB} ON {JOB}.id = {ATTEMPT}.job_id WHERE {ATTEMPT}.ended >= %s "
        f"AND {ATTEMPT}.outcome <> 'suspended'"
        ") AS parts GROUP BY queue ORDER BY queue"
    )


@functools.cache
def pickup_latencies(dialect: Dialect) -> str:
    """Per queue, the pick-up latency (``started - run_after``) of the attempts started since a moment.

    An attempt started in the window is running, or ended in it: the job's row holds it
    (running, or succeeded or failed in the window, through the indexes ``queue_counts``
    reads), or its record does (ended in the window). Percentiles are nearest-rank, in SQL that
    both databases run. Parameters: since, eight times. Returns queue,
    attempts, p50, p95, max (seconds).
    """
    wait = dialect.seconds_between
    job_wait = wait.format(later=f"{JOB}.started", earlier=f"{JOB}.run_after")
    record_wait = wait.format(later=f"{ATTEMPT}.started", earlier=f"{ATTEMPT}.due")
    return (
        f"WITH waits AS (SELECT queue, {job_wait} AS wait FROM {JOB} "  # noqa: S608
        "WHERE status = 'running' AND locked_until IS NOT NULL AND started >= %s "
        f"UNION ALL SELECT queue, {job_wait} FROM {JOB} "
        "WHERE status = 'running' AND locked_until IS NULL AND started >= %s "
        f"UNION ALL SELECT queue, {job_wait} FROM {JOB} WHERE status = 'succeeded' AND finished >= %s "
        "AND started >= %s "
        f"UNION ALL SELECT queue, {job_wait} FROM {JOB} WHERE status = 'failed' AND finished >= %s "
        "AND started >= %s AND locked_by <> '' "
        f"UNION ALL SELECT {JOB}.queue, {record_wait} FROM {ATTEMPT} "
        f"JOIN {JOB} ON {JOB}.id = {ATTEMPT}.job_id "
        f"WHERE {ATTEMPT}.ended >= %s AND {ATTEMPT}.started >= %s AND {ATTEMPT}.due IS NOT NULL), "
        "ranked AS (SELECT queue, wait, row_number() OVER (PARTITION BY queue ORDER BY wait) AS place, "
        "count(*) OVER (PARTITION BY queue) AS total FROM waits) "
        "SELECT queue, max(total), min(CASE WHEN place >= 0.5 * total THEN wait END), "
        "min(CASE WHEN place >= 0.95 * total THEN wait END), max(wait) FROM ranked "
        "GROUP BY queue ORDER BY queue"
    )


# Durable steps, sleeps and events -------------------------------------------------------

#: The columns a journal read returns, in this order (``values.Checkpoint.from_row``).
STEP_COLUMNS = (
    "name",
    '"position"',
    "kind",
    "status",
    "attempt",
    "result",
    "error",
    "worker",
    "started",
    "ended",
    '"until"',
    '"key"',
    "event_id",
)


@functools.cache
def read_steps(dialect: Dialect) -> str:
    """A job's journal, in the order it was recorded. Parameter: the job id. Returns ``STEP_COLUMNS``."""
    columns = ", ".join(
        dialect.json_text.format(column=column) if column == "result" else column for column in STEP_COLUMNS
    )
    return f'SELECT {columns} FROM {STEP} WHERE job_id = %s ORDER BY "position", id'  # noqa: S608


@functools.cache
def save_held_steps(dialect: Dialect) -> str:
    """Record checkpoints of running jobs, each only if its job is held: one statement (PostgreSQL).

    The jobs are locked under ``FENCE`` (``FOR SHARE``: it blocks a rescue's requeue or a cancel
    until the statement's transaction ends, as a fenced ``UPDATE`` would, without writing a new
    row version), and the checkpoints of the jobs held are inserted, or replace ones that did
    not end (failed, sleeping, waiting); a step that succeeded or a wait that timed out is never
    replaced. One statement is atomic on its own: outside a transaction it is one round trip.
    Parameters: jobs (``mine``), worker id, the checkpoints as a JSON array of
    ``[job id, *STEP_COLUMNS]`` rows (times in ISO 8601, the result as JSON). Returns job_id.
    """
    names = ", ".join(STEP_COLUMNS)
    casts = ("bigint", "text", "integer", "text", "text", "integer", "jsonb", "text", "text",
             "timestamptz", "timestamptz", "timestamptz", "text", "bigint")  # fmt: skip
    fields = ", ".join(
        (
            f"NULLIF((r.value->{index})::jsonb, 'null'::jsonb)"
            if cast == "jsonb"
            else f"(r.value->>{index})::{cast}"
        )
        + f" AS {column}"
        for index, (cast, column) in enumerate(zip(casts, ("job_id", *STEP_COLUMNS), strict=True))
    )
    updates = ", ".join(f"{column} = EXCLUDED.{column}" for column in STEP_COLUMNS[1:])
    return (
        f"WITH held AS MATERIALIZED (SELECT {JOB}.id FROM {JOB}, {dialect.mine} "  # noqa: S608
        f"WHERE {FENCE} ORDER BY {JOB}.id FOR SHARE OF {JOB}), "
        f"points AS (SELECT {fields} FROM json_array_elements(%s::json) AS r(value)) "
        f"INSERT INTO {STEP} (job_id, {names}) SELECT points.* FROM points "
        "JOIN held ON held.id = points.job_id "
        f"ON CONFLICT (job_id, name) DO UPDATE SET {updates} "
        f"WHERE {STEP}.status NOT IN ('succeeded', 'timed_out') RETURNING job_id"
    )


@functools.cache
def save_step(dialect: Dialect, rows: int = 1) -> str:
    """Record checkpoints, or replace ones that did not end (failed, sleeping, waiting).

    A step that succeeded or a wait that timed out is never replaced: no row is returned for
    it then. Run after a fenced write to the jobs (which locks their rows) in the same
    transaction. Parameters, for each row: job id, then ``STEP_COLUMNS`` (the result as JSON
    text or None). Returns job_id.
    """
    names = ", ".join(STEP_COLUMNS)
    row = ", ".join(["%s", *(dialect.json_param if column == "result" else "%s" for column in STEP_COLUMNS)])
    updates = ", ".join(f"{column} = EXCLUDED.{column}" for column in STEP_COLUMNS[1:])
    return (
        f"INSERT INTO {STEP} (job_id, {names}) VALUES {', '.join([f'({row})'] * rows)} "  # noqa: S608
        f"ON CONFLICT (job_id, name) DO UPDATE SET {updates} "
        f"WHERE {STEP}.status NOT IN ('succeeded', 'timed_out') RETURNING job_id"
    )


@functools.cache
def suspend(dialect: Dialect) -> str:
    """Let a running job go until it wakes (``wake_due``, ``wake_waiting``), its attempt excused.

    A unique job keeps its key while suspended if it keeps it while running. Parameters:
    wake time (a sleep's end, a wait's timeout, or ``FOREVER``), jobs, worker id. Returns id,
    group_id, has_dependents.
    """
    return _fenced(
        dialect,
        "status = 'suspended', run_after = %s, "
        f"excused = {JOB}.excused + CASE WHEN {JOB}.excused < {ATTEMPT_CAP} THEN 1 ELSE 0 END, "
        f"locked_by = '', locked_until = NULL, {keeps_unique('running')}",
    )


@functools.cache
def wake_due(dialect: Dialect) -> str:
    """Queue the suspended jobs whose sleep ended or whose wait timed out, oldest first.

    Parameters: now, limit. Returns id.
    """
    due = (
        f"SELECT id FROM {JOB} WHERE status = 'suspended' AND run_after <= %s "  # noqa: S608
        f"ORDER BY run_after LIMIT %s{dialect.skip_locked}"
    )
    return (
        f"UPDATE {JOB} SET status = 'queued' WHERE "  # noqa: S608
        + dialect.id_among.format(ids=due)
        + " AND status = 'suspended' RETURNING id"
    )


@functools.cache
def wake_waiting(dialect: Dialect) -> str:
    """Queue the suspended jobs waiting for an event with this key, due now.

    Parameters: now, the key. Returns id.
    """
    waits = f"SELECT job_id FROM {STEP} WHERE \"key\" = %s AND status = 'waiting'"  # noqa: S608
    return (
        f"UPDATE {JOB} SET status = 'queued', run_after = %s WHERE "  # noqa: S608
        + dialect.id_among.format(ids=waits)
        + " AND status = 'suspended' RETURNING id"
    )


def lock_event_key() -> str:
    """Hold an event key until the transaction ends (PostgreSQL): a wait and a notify take turns.

    Without it, a job could find no event and suspend while a notify, not yet committed, finds
    the job still running and wakes nothing. Parameter: the key.
    """
    return "SELECT pg_advisory_xact_lock(8271, hashtext(%s))"


@functools.cache
def insert_event(dialect: Dialect) -> str:
    """Record an event. Parameters: key, payload (JSON text or None), sent. Returns id."""
    return f'INSERT INTO {EVENT} ("key", payload, sent) VALUES (%s, {dialect.json_param}, %s) RETURNING id'  # noqa: S608


@functools.cache
def find_event(dialect: Dialect) -> str:
    """The first event with a key sent since the job was scheduled that no wait of the job received.

    Parameters: key, job id, job id. Returns id, payload (JSON text).
    """
    payload = dialect.json_text.format(column=f"{EVENT}.payload")
    return (
        f'SELECT {EVENT}.id, {payload} FROM {EVENT} WHERE {EVENT}."key" = %s '  # noqa: S608
        f"AND {EVENT}.sent >= (SELECT added FROM {JOB} WHERE id = %s) "
        f"AND NOT EXISTS (SELECT 1 FROM {STEP} WHERE {STEP}.job_id = %s AND {STEP}.event_id = {EVENT}.id) "
        f"ORDER BY {EVENT}.id LIMIT 1"
    )


def oldest_unfinished() -> str:
    """When the oldest unfinished job was added (None without one): the events a wait may still receive.

    A wait receives only events sent since its job was added (``find_event``). Each part
    reads through a partial index, so that the cost follows the unfinished jobs: queued and
    waiting ones through ``aio_async_job_pending``, running ones through ``aio_async_job_lease``
    and ``aio_async_job_unleased``, suspended ones through ``aio_async_job_suspended``.
    Returns the moment.
    """
    return (
        f"SELECT min(added) FROM (SELECT min(added) AS added FROM {JOB} "  # noqa: S608
        "WHERE status IN ('queued', 'waiting') "
        f"UNION ALL SELECT min(added) FROM {JOB} WHERE status = 'running' AND locked_until IS NOT NULL "
        f"UNION ALL SELECT min(added) FROM {JOB} WHERE status = 'running' AND locked_until IS NULL "
        f"UNION ALL SELECT min(added) FROM {JOB} WHERE status = 'suspended') AS parts"
    )


@functools.cache
def delete_steps(jobs: int) -> str:
    """Delete the journals of these jobs. Parameters: the job ids."""
    return f"DELETE FROM {STEP} WHERE job_id IN ({_ids(jobs)})"  # noqa: S608


def delete_events() -> str:
    """Delete events sent before a moment. Parameters: the moment, limit. Returns id."""
    return (
        f"DELETE FROM {EVENT} WHERE id IN (SELECT id FROM {EVENT} WHERE sent < %s "  # noqa: S608
        "ORDER BY sent LIMIT %s) RETURNING id"
    )


@functools.cache
def forget_steps(names: int) -> str:
    """Delete some checkpoints of a job's journal. Parameters: the job id, the names. Returns id."""
    return f"DELETE FROM {STEP} WHERE job_id = %s AND name IN ({_ids(names)}) RETURNING id"  # noqa: S608


@functools.cache
def end_sleeps(queues: int) -> tuple[str, str]:
    """Durable sleeps ended now (``aio_async.testing``): their records, then their jobs' wake times.

    Parameters of each: now, now, the queues. The wake-up pass then queues the jobs.
    """
    among = f" AND queue IN ({_ids(queues)})" if queues else ""
    sleeping = f"SELECT id FROM {JOB} WHERE status = 'suspended' AND run_after > %s{among}"  # noqa: S608
    return (
        f"UPDATE {STEP} SET \"until\" = %s WHERE status = 'sleeping' AND job_id IN ({sleeping})",  # noqa: S608
        f"UPDATE {JOB} SET run_after = %s WHERE id IN ({sleeping}) "  # noqa: S608
        f"AND id IN (SELECT job_id FROM {STEP} WHERE status = 'sleeping')",
    )
