"""The operations of durable steps: a job's journal, its checkpoints, suspending and waking it, events.

Each is a sequence of statements like those of ``store.operations``, run by either driver. A
checkpoint is written after its job's row is locked under the fence (PostgreSQL:
``sql.hold_jobs``, ``FOR SHARE``; SQLite: a fenced write, ``sql.heartbeat``, which takes the
database's write lock), in the transaction that commits the step's own writes: a worker that
no longer holds the job cannot commit a step, and the lock orders the checkpoint before any
write of a rescue or a cancel. The journal's unique (job, name) makes a second commit of one
step impossible even so.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

from aio_async.store import statements as sql
from aio_async.store.dialects import Dialect
from aio_async.store.operations import _mine
from aio_async.store.statements import Op
from aio_async.values import Attempt, AttemptEnd, Checkpoint

__all__ = [
    "FOREVER",
    "checkpoint",
    "checkpoints",
    "end_sleeps",
    "forget_steps",
    "notify_event",
    "prune_events",
    "read_steps",
    "suspend",
    "wait_event",
    "wake_due",
]

#: The wake time of a job that waits for an event without a timeout.
FOREVER = datetime.datetime(9999, 1, 1, tzinfo=datetime.UTC)
#: Suspended jobs one wake-up pass queues, at most.
WAKE_BATCH = 500


def read_steps(dialect: Dialect, job_id: int) -> Op[dict[str, Checkpoint]]:
    """The job's journal, by name."""
    rows = yield sql.read_steps(dialect), [job_id]
    return {point.name: point for point in map(Checkpoint.from_row, rows)}


def _step_params(job_id: int, point: Checkpoint) -> list[Any]:
    result = None if point.result is None else json.dumps(point.result, separators=(",", ":"))
    return [
        job_id, point.name, point.position, point.kind, point.status, point.attempt, result, point.error,
        point.worker, point.started, point.ended, point.until, point.key, point.event_id,
    ]  # fmt: skip


def checkpoint(
    dialect: Dialect, attempt: Attempt, worker_id: str, point: Checkpoint, lease_end: datetime.datetime
) -> Op[bool]:
    """Record ``point`` under the job's fence, renewing its lease; False (nothing written) if not held.

    Run in the transaction that commits the step's own writes.
    """
    saved = yield from checkpoints(dialect, [(attempt, point)], worker_id, lease_end)
    return attempt.job_id in saved


def checkpoints(
    dialect: Dialect,
    points: Sequence[tuple[Attempt, Checkpoint]],
    worker_id: str,
    lease_end: datetime.datetime,
) -> Op[set[int]]:
    """Record the checkpoints of several jobs, each under its job's fence; the ids of the jobs recorded.

    A job no longer held gets nothing written; the others are written all the same. On
    PostgreSQL it is one statement (``sql.save_held_steps``), atomic without a transaction of its
    own; on SQLite a fenced write (which takes the database's one write lock, renewing the
    leases) then the checkpoints, in the caller's transaction.
    """
    mine = _mine([(attempt.job_id, attempt.number, None) for attempt, _ in points])
    if dialect.for_update:
        rows = [_json_row(attempt.job_id, point) for attempt, point in points]
        saved = yield sql.save_held_steps(dialect), [mine, worker_id, json.dumps(rows, separators=(",", ":"))]
        return {row[0] for row in saved}
    held_rows = yield sql.heartbeat(dialect), [lease_end, mine, worker_id]
    held = {row[0] for row in held_rows}
    kept = [(attempt, point) for attempt, point in points if attempt.job_id in held]
    if not kept:
        return set()
    params: list[Any] = []
    for attempt, point in kept:
        params += _step_params(attempt.job_id, point)
    saved = yield sql.save_step(dialect, len(kept)), params
    return {row[0] for row in saved}


def _json_row(job_id: int, point: Checkpoint) -> list[Any]:
    """A checkpoint as a row of ``sql.save_held_steps``'s JSON parameter: times in ISO 8601."""

    def moment(value: datetime.datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return [
        job_id, point.name, point.position, point.kind, point.status, point.attempt, point.result,
        point.error, point.worker, moment(point.started), moment(point.ended), moment(point.until),
        point.key, point.event_id,
    ]  # fmt: skip


def suspend(
    dialect: Dialect, attempt: Attempt, worker_id: str, point: Checkpoint, now: datetime.datetime
) -> Op[bool]:
    """Record a sleep or a wait and let the job go until ``point.until`` (a wait without one: an event).

    Its attempt is excused and recorded in the attempt history. Run in one transaction;
    False (nothing written) if the attempt no longer held its job.
    """
    mine = _mine([(attempt.job_id, attempt.number, None)])
    recorded = yield sql.record_attempt(dialect), [now, AttemptEnd.SUSPENDED.value, mine, worker_id]
    rows = yield sql.suspend(dialect), [point.until or FOREVER, mine, worker_id]
    if not rows:
        for row in recorded:
            yield sql.forget_attempt(), [row[0]]
        return False
    yield sql.save_step(dialect), _step_params(attempt.job_id, point)
    return True


def wait_event(
    dialect: Dialect,
    attempt: Attempt,
    worker_id: str,
    point: Checkpoint,
    now: datetime.datetime,
    lease_end: datetime.datetime,
) -> Op[tuple[str, Any]]:
    """A wait reached: its event received, its timeout passed, or the job suspended until one of them.

    ``point`` is the wait as it would be recorded waiting (its key, its timeout in ``until``).
    Returns (``succeeded``, payload), (``timed_out``, None), (``waiting``, None) once suspended,
    or (``lost``, None) when the attempt no longer held its job (nothing written). Run in one
    transaction: on PostgreSQL the event key is locked first, so that a notify and a wait
    take turns, and neither misses the other.
    """
    assert point.key is not None
    if dialect.advisory_locks:
        yield sql.lock_event_key(), [point.key]
    found = yield sql.find_event(dialect), [point.key, attempt.job_id, attempt.job_id]
    if found:
        event_id, payload = found[0]
        received = Checkpoint(
            point.name, point.position, point.kind, "succeeded", attempt.number,
            None if payload is None else json.loads(payload), "", worker_id, point.started, now,
            point.until, point.key, event_id,
        )  # fmt: skip
        held = yield from checkpoint(dialect, attempt, worker_id, received, lease_end)
        return ("succeeded", received.result) if held else ("lost", None)
    if point.until is not None and point.until <= now:
        ended = Checkpoint(
            point.name, point.position, point.kind, "timed_out", attempt.number, None, "", worker_id,
            point.started, now, point.until, point.key,
        )  # fmt: skip
        held = yield from checkpoint(dialect, attempt, worker_id, ended, lease_end)
        return ("timed_out", None) if held else ("lost", None)
    held = yield from suspend(dialect, attempt, worker_id, point, now)
    return ("waiting", None) if held else ("lost", None)


def notify_event(dialect: Dialect, key: str, payload: Any, now: datetime.datetime) -> Op[list[int]]:
    """Record an event and queue the jobs waiting for its key; returns their ids.

    Run in the caller's transaction: rolled back, it wakes nobody.
    """
    if dialect.advisory_locks:
        yield sql.lock_event_key(), [key]
    text = None if payload is None else json.dumps(payload, separators=(",", ":"))
    yield sql.insert_event(dialect), [key, text, now]
    woken = yield sql.wake_waiting(dialect), [now, key]
    return sorted(row[0] for row in woken)


def end_sleeps(queues: Sequence[str], now: datetime.datetime) -> Op[None]:
    """End the durable sleeps of the suspended jobs of ``queues`` (empty: every queue) now (tests)."""
    records, jobs = sql.end_sleeps(len(queues))
    yield records, [now, now, *queues]
    yield jobs, [now, now, *queues]


def wake_due(dialect: Dialect, now: datetime.datetime, limit: int = WAKE_BATCH) -> Op[list[int]]:
    """Queue the suspended jobs whose sleep ended or whose wait timed out; returns their ids."""
    rows = yield sql.wake_due(dialect), [now, limit]
    return sorted(row[0] for row in rows)


def forget_steps(job_id: int, names: Sequence[str]) -> Op[int]:
    """Delete the named checkpoints of a job's journal; returns how many."""
    if not names:
        return 0
    rows = yield sql.forget_steps(len(names)), [job_id, *names]
    return len(rows)


def prune_events(before: datetime.datetime, limit: int) -> Op[int]:
    """Delete up to ``limit`` events sent before ``before``; returns how many."""
    rows = yield sql.delete_events(), [before, limit]
    return len(rows)


def unreached(journal: dict[str, Checkpoint], reached: Sequence[str]) -> list[str]:
    """The names of recorded checkpoints with a committed effect that this attempt has not reached."""
    seen = set(reached)
    return [
        name
        for name, point in sorted(journal.items(), key=lambda item: item[1].position)
        if point.status != "failed" and name not in seen
    ]
