"""Retention: delete finished jobs once they are older than their state's age, in batches.

``prune()`` is what ``python -m aio_async prune``, ``manage.py prune_queue`` and a worker
with ``AIO_ASYNC["RETENTION"]`` run. A job's errors go with it. A job of a group goes only
once every member of the group is finished and past its own state's age, and the group then
goes too (the rule of django-async's ``remove_old_jobs``). Each batch is one short
transaction that skips rows another transaction holds, so claims and completions go on.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.utils import timezone

from aio_async import sql

__all__ = ["PRUNED_STATES", "Retention", "parse_age", "prune", "prune_in_thread"]

#: The states a job can be pruned in, as ``Retention`` fields and ``--STATE`` options.
PRUNED_STATES = ("succeeded", "failed", "cancelled")
BATCH = 1000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


def parse_age(value: object, label: str) -> float | None:
    """Seconds from ``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"``, a number, a timedelta or None."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, str):
        found = _AGE.fullmatch(value.strip())
        if found is None:
            raise ImproperlyConfigured(
                f"{label} must be an age such as '7d', '12h', '30m', '45s' or '2w', got {value!r}."
            )
        value = float(found.group(1)) * _UNITS[found.group(2) or "s"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise ImproperlyConfigured(
            f"{label} must be an age (a number of seconds >= 0, or '7d'), got {value!r}."
        )
    return float(value)


@dataclasses.dataclass(frozen=True)
class Retention:
    """How long finished jobs are kept, per state, in seconds (None: for good)."""

    succeeded: float | None = None
    failed: float | None = None
    cancelled: float | None = None
    #: How often a worker prunes, when the setting is on.
    every: float = 3600.0

    @classmethod
    def parse(cls, raw: object, label: str = "AIO_ASYNC['RETENTION']") -> Retention:
        """The ``RETENTION`` setting: a dict of ``SUCCEEDED``, ``FAILED``, ``CANCELLED``, ``EVERY``."""
        if not isinstance(raw, Mapping):
            raise ImproperlyConfigured(
                f"{label} must be a dict such as {{'SUCCEEDED': '7d', 'FAILED': '30d'}}, got {raw!r}."
            )
        known = {state.upper() for state in PRUNED_STATES} | {"EVERY"}
        unknown = sorted(str(key) for key in raw if key not in known)
        if unknown:
            raise ImproperlyConfigured(f"Unknown {label} keys {unknown}; known: {sorted(known)}.")
        ages = {str(key).lower(): parse_age(value, f"{label}[{key!r}]") for key, value in raw.items()}
        every = ages.pop("every", None)
        if every is not None and every < 1:
            raise ImproperlyConfigured(f"{label}['EVERY'] must be at least 1 second, got {every!r}.")
        return cls(**ages, every=every if every is not None else cls.every)

    @property
    def ages(self) -> dict[str, float]:
        """The states that are pruned, with their ages."""
        return {state: age for state in PRUNED_STATES if (age := getattr(self, state)) is not None}


def prune(
    retention: Retention,
    *,
    using: str = "default",
    dry_run: bool = False,
    batch: int = BATCH,
    keep_going: Callable[[], bool] = lambda: True,
) -> dict[str, int]:
    """Delete finished jobs past their state's age (with their errors and empty groups); count them.

    With ``dry_run``, count what would go and delete nothing. ``keep_going`` is asked before
    each batch (a stopping worker says no).
    """
    ages = retention.ages
    counted = dict.fromkeys(ages, 0)
    if not ages:
        return counted
    connection = connections[using]
    dialect = sql.for_vendor(connection.vendor)
    now = timezone.now()
    cutoffs = [(state, now - datetime.timedelta(seconds=age)) for state, age in ages.items()]
    if dry_run:
        with transaction.atomic(using=using):
            return sql.run_on(connection, _count(cutoffs))
    for state, _ in cutoffs:
        while keep_going():
            with transaction.atomic(using=using):
                deleted = sql.run_on(connection, _delete_batch(dialect, state, cutoffs, batch))
            counted[state] += deleted
            if deleted < batch:
                break
    # Periodic ticks as old as the longest-kept state's jobs go too (their jobs are gone).
    oldest = min(cutoff for _, cutoff in cutoffs)
    while keep_going():
        with transaction.atomic(using=using):
            deleted = sql.run_on(connection, _delete_ticks(oldest, batch))
        if deleted < batch:
            break
    return counted


def _past(cutoffs: Sequence[tuple[str, datetime.datetime]]) -> list[Any]:
    """The parameters of ``sql.prunable``'s "past its age" test: state, cutoff, ..."""
    return [value for pair in cutoffs for value in pair]


def _count(cutoffs: list[tuple[str, datetime.datetime]]) -> sql.Op[dict[str, int]]:
    counted = {}
    for state, cutoff in cutoffs:
        rows = yield sql.count_prunable(len(cutoffs)), [state, cutoff, *_past(cutoffs)]
        counted[state] = int(rows[0][0])
    return counted


def _delete_ticks(before: datetime.datetime, batch: int) -> sql.Op[int]:
    rows = yield sql.delete_old_ticks(), [before, batch]
    return len(rows)


def _delete_batch(
    dialect: sql.Dialect, state: str, cutoffs: list[tuple[str, datetime.datetime]], batch: int
) -> sql.Op[int]:
    rows = yield sql.prunable(dialect, len(cutoffs)), [state, dict(cutoffs)[state], *_past(cutoffs), batch]
    if not rows:
        return 0
    ids = [row[0] for row in rows]
    groups = sorted({row[1] for row in rows if row[1] is not None})
    yield sql.delete_errors(len(ids)), ids
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
