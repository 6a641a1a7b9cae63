"""Maintenance writes: pruning finished jobs, a periodic schedule's ticks, a queue's pause.

``prune()`` is what ``python -m aio_async prune``, ``manage.py prune_queue`` and a worker
with ``AIO_ASYNC["RETENTION"]`` run. A job goes with its errors, attempt records and steps;
a job of a group goes only once every member of the group is finished and past its own
state's age, and the group then goes too (the rule of django-async's ``remove_old_jobs``).
Events (``notify_event``) as old as the longest-kept state's jobs go too, but never one that
an unfinished job could still receive. Each batch is one short transaction that skips rows
another transaction holds, so claims and completions go on.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from aio_async.retention import BATCH, Retention
from aio_async.store import journal
from aio_async.store import statements as sql
from aio_async.store.dialects import Dialect, for_vendor
from aio_async.store.drivers.django import run, run_on
from aio_async.store.statements import Op
from aio_async.values import _moment

__all__ = ["insert_tick", "notify_queue", "prune", "prune_in_thread"]


def prune(
    retention: Retention,
    *,
    using: str = "default",
    dry_run: bool = False,
    batch: int = BATCH,
    keep_going: Callable[[], bool] = lambda: True,
) -> dict[str, int]:
    """Delete finished jobs past their state's age (with their errors, steps and empty groups); count them.

    Old periodic ticks and events go too, uncounted. With ``dry_run``, count the jobs that
    would go and delete nothing. ``keep_going`` is asked before each batch (a stopping worker
    says no).
    """
    ages = retention.ages
    counted = dict.fromkeys(ages, 0)
    if not ages:
        return counted
    connection = connections[using]
    dialect = for_vendor(connection.vendor)
    now = timezone.now()
    cutoffs = [(state, now - datetime.timedelta(seconds=age)) for state, age in ages.items()]
    if dry_run:
        with transaction.atomic(using=using):
            return run_on(connection, _count(cutoffs))
    for state, _ in cutoffs:
        while keep_going():
            with transaction.atomic(using=using):
                deleted = run_on(connection, _delete_batch(dialect, state, cutoffs, batch))
            counted[state] += deleted
            if deleted < batch:
                break
    # Periodic ticks as old as the longest-kept state's jobs go too (their jobs are gone).
    oldest = min(cutoff for _, cutoff in cutoffs)
    while keep_going():
        with transaction.atomic(using=using):
            deleted = run_on(connection, _delete_ticks(oldest, batch))
        if deleted < batch:
            break
    # So do events, but a wait receives an event sent since its job was added: those an
    # unfinished job (one that sleeps before its wait, say) may still receive are kept.
    while keep_going():
        with transaction.atomic(using=using):
            deleted = run_on(connection, _delete_events(oldest, batch))
        if deleted < batch:
            break
    return counted


def _past(cutoffs: Sequence[tuple[str, datetime.datetime]]) -> list[Any]:
    """The parameters of ``statements.prunable``'s "past its age" test: state, cutoff, ..."""
    return [value for pair in cutoffs for value in pair]


def _count(cutoffs: list[tuple[str, datetime.datetime]]) -> Op[dict[str, int]]:
    counted = {}
    for state, cutoff in cutoffs:
        rows = yield sql.count_prunable(len(cutoffs)), [state, cutoff, *_past(cutoffs)]
        counted[state] = int(rows[0][0])
    return counted


def _delete_ticks(before: datetime.datetime, batch: int) -> Op[int]:
    rows = yield sql.delete_old_ticks(), [before, batch]
    return len(rows)


def _delete_events(before: datetime.datetime, batch: int) -> Op[int]:
    rows = yield sql.oldest_unfinished(), []
    added = _moment(rows[0][0])
    if added is not None:
        before = min(before, added)
    return (yield from journal.prune_events(before, batch))


def _delete_batch(
    dialect: Dialect, state: str, cutoffs: list[tuple[str, datetime.datetime]], batch: int
) -> Op[int]:
    rows = yield sql.prunable(dialect, len(cutoffs)), [state, dict(cutoffs)[state], *_past(cutoffs), batch]
    if not rows:
        return 0
    ids = [row[0] for row in rows]
    groups = sorted({row[1] for row in rows if row[1] is not None})
    yield sql.delete_errors(len(ids)), ids
    yield sql.delete_attempts(len(ids)), ids
    yield sql.delete_steps(len(ids)), ids
    yield sql.delete_dependencies(len(ids)), [*ids, *ids]
    if groups:
        yield sql.unlink_finals(len(ids)), ids
    yield sql.delete_jobs(len(ids)), ids
    if groups:
        yield sql.delete_empty_groups(len(groups)), groups
    return len(ids)


def prune_in_thread(retention: Retention, using: str, keep_going: Callable[[], bool]) -> dict[str, int]:
    """``prune()`` in a thread of its own, whose connections are closed when it is done."""
    try:
        return prune(retention, using=using, keep_going=keep_going)
    finally:
        connections.close_all()


def insert_tick(schedule: str, key: str, tick: datetime.datetime, using: str) -> int | None:
    """Record a periodic schedule's tick in the caller's transaction; its id, or None if recorded already."""
    rows = run_on(connections[using], _insert_tick(schedule, key, tick))
    return int(rows[0][0]) if rows else None


def _insert_tick(schedule: str, key: str, tick: datetime.datetime) -> Op[sql.Rows]:
    rows = yield sql.insert_tick(), [schedule, key, tick]
    return rows


def notify_queue(name: str, using: str) -> None:
    """Tell workers, on commit, that queue ``name`` was paused or resumed (where the database notifies)."""
    run(lambda dialect: _notify_queue(dialect, name), using)


def _notify_queue(dialect: Dialect, name: str) -> Op[None]:
    if dialect.notifies:
        yield sql.notify_queues(), [name]
