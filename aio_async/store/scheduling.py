"""Scheduling writes: new jobs (plain, unique, replacing), what they run after, and cancels.

Each runs through the caller's Django connection, in the caller's transaction (DESIGN
promise 1). Jobs arrive as unsaved model instances with the fields to write; the store
knows their columns, not their model, so the tables' models stay above it.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.utils import timezone

from aio_async.store import operations
from aio_async.store import statements as sql
from aio_async.store.drivers.django import cursor, psycopg3, run

if TYPE_CHECKING:  # Django's fields are generic to the type checker only
    from django.db.models import Field

    AnyField = Field[Any, Any]

__all__ = [
    "cancel",
    "expire_unique",
    "insert",
    "mark_prerequisites",
    "replace",
    "retry",
    "settle",
    "unique_holders",
]

#: Keys per statement for the unique-key look-ups (SQLite caps a statement's parameters).
KEY_BATCH = 500

#: The job table's columns and their types, by database vendor: asked of Django once, not per job.
_columns: dict[str, tuple[tuple[str, str], ...]] = {}


def insert(
    jobs: Sequence[Any], fields: Sequence[AnyField], alias: str, *, unique: bool = False
) -> list[int | None]:
    """Write new jobs, in one statement where the database allows; the id of each, in order.

    With ``unique``, a job whose ``unique_key`` another job holds is skipped: its id is None.
    """
    if not jobs:
        return []
    connection = connections[alias]
    arrays = connection.vendor == "postgresql" and psycopg3()
    columns = _columns.get(connection.vendor) or _columns.setdefault(
        connection.vendor, tuple((str(field.column), str(field.db_type(connection))) for field in fields)
    )
    rows: list[tuple[Any, ...]] = []
    with cursor(connection) as db:
        if arrays:
            # One statement whatever the count: one value per column, or one array per column.
            values: list[Any] = []
            for field in fields:
                column = [getattr(job, field.attname) for job in jobs]
                if field.get_internal_type() == "JSONField":  # sent as text, read as jsonb
                    column = [None if value is None else json.dumps(value) for value in column]
                values.append(column if len(jobs) > 1 else column[0])
            db.execute(sql.insert_jobs(columns, len(jobs), arrays=True, unique=unique), values)
            rows = db.fetchall()
        else:
            size = max(1, connection.ops.bulk_batch_size(list(fields), list(jobs)))
            for start in range(0, len(jobs), size):
                batch = jobs[start : start + size]
                db.execute(
                    sql.insert_jobs(columns, len(batch), arrays=False, unique=unique),
                    [
                        field.get_db_prep_save(getattr(job, field.attname), connection)
                        for job in batch
                        for field in fields
                    ],
                )
                rows += db.fetchall()
    if not unique:
        return [pk for (pk,) in rows]
    ids = {key: pk for pk, key in rows}
    return [ids.get(str(job.unique_key)) for job in jobs]


def expire_unique(keys: list[str], before: datetime.datetime, alias: str) -> None:
    """Free the keys of finished jobs that hold them for a period which ended ``before``."""
    _by_keys(alias, sql.expire_unique, keys, [before])


def unique_holders(keys: list[str], alias: str) -> dict[str, int]:
    """The jobs that hold these unique keys now, as {key: id}."""
    return _by_keys(alias, sql.unique_holders, keys)


def _by_keys(
    alias: str, statement: Callable[[int], str], keys: list[str], before: Sequence[Any] = ()
) -> dict[str, int]:
    """Run a statement over ``keys`` in batches; return its (id, key) rows as {key: id}."""
    connection = connections[alias]
    adapt = connection.ops.adapt_datetimefield_value
    params = [adapt(value) if isinstance(value, datetime.datetime) else value for value in before]
    found: dict[str, int] = {}
    with cursor(connection) as db:
        for start in range(0, len(keys), KEY_BATCH):
            batch = keys[start : start + KEY_BATCH]
            db.execute(statement(len(batch)), [*params, *batch])
            if db.description:
                found.update({key: pk for pk, key in db.fetchall()})
    return found


def replace(jobs: Sequence[Any], fields: Sequence[AnyField], alias: str) -> dict[str, int]:
    """Give each job's ``REPLACED`` fields to the unstarted job holding its key; {key: id} of those."""
    connection = connections[alias]
    replaced: dict[str, int] = {}
    with cursor(connection) as db:
        for job in jobs:
            values = [field.get_db_prep_save(getattr(job, field.attname), connection) for field in fields]
            db.execute(sql.replace_unique(), [*values, job.unique_key])
            replaced.update({key: pk for pk, key in db.fetchall()})
    return replaced


def mark_prerequisites(ids: list[int], alias: str) -> set[int]:
    """Mark the jobs that others will run after, locking them; the ids of those that exist."""
    with cursor(connections[alias]) as db:
        db.execute(sql.mark_prerequisites(len(ids)), ids)
        return {row[0] for row in db.fetchall()}


def settle(waiting: list[int], alias: str) -> None:
    """Queue or cancel waiting jobs whose prerequisites have finished (``operations.settle_waiting``)."""
    now = timezone.now()
    run(lambda dialect: operations.settle_waiting(dialect, waiting, now), alias)


def cancel(ids: list[int], by: str, alias: str, *, running_too: bool) -> list[int]:
    """Cancel the unfinished jobs among ``ids`` (``operations.cancel``); the ids cancelled."""
    now = timezone.now()
    return run(lambda dialect: operations.cancel(dialect, ids, by, now, running_too=running_too), alias)


def retry(ids: list[int], states: Sequence[str], alias: str) -> list[int]:
    """Queue the jobs among ``ids`` that are in ``states`` to run now; the ids it queued."""
    now = timezone.now()
    return run(lambda dialect: operations.retry(dialect, ids, states, now), alias)
