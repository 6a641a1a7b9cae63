"""Per-database SQL: the claim query and the wake-up channel, one small module per vendor."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import BaseDatabaseWrapper

from aio_async.models import Job

__all__ = ["Dialect", "claim", "for_connection"]


class Dialect(Protocol):
    """What the queue needs from a database beyond the ORM."""

    #: Appended to the claim's inner SELECT (PostgreSQL: FOR UPDATE SKIP LOCKED).
    lock_clause: str
    #: True when the database can wake a worker (LISTEN/NOTIFY); otherwise workers poll.
    can_notify: bool

    def listen(self, connection: BaseDatabaseWrapper) -> AsyncIterator[str]:
        """Yield the queue name of every wake-up, on a connection of its own."""


def for_connection(connection: BaseDatabaseWrapper) -> Dialect:
    """The dialect for ``connection.vendor``, or ImproperlyConfigured naming what is supported."""
    if connection.vendor == "postgresql":
        from aio_async.dialects import postgresql

        return postgresql.DIALECT
    if connection.vendor == "sqlite":
        from aio_async.dialects import sqlite

        return sqlite.DIALECT
    raise ImproperlyConfigured(
        f"aio_async supports PostgreSQL and SQLite; database {connection.alias!r} is "
        f"{connection.vendor}. Point AIO_ASYNC['DATABASE'] at a supported alias."
    )


def claim(
    connection: BaseDatabaseWrapper,
    *,
    worker: str,
    queues: tuple[str, ...],
    limit: int,
    now: datetime.datetime,
    lease_until: datetime.datetime,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> list[Job]:
    """Atomically lease up to ``limit`` due queued jobs to ``worker``; return them in order.

    One UPDATE over the first due rows (priority descending, then ``run_after``, then id),
    with the dialect's lock clause on the inner SELECT. ``include`` and ``exclude`` keep or
    drop jobs whose name contains one of the given strings.
    """
    quote = connection.ops.quote_name
    table = quote(Job._meta.db_table)
    columns = ", ".join(quote(str(field.column)) for field in Job._meta.concrete_fields)
    adapt = connection.ops.adapt_datetimefield_value
    where = [
        "status = 'queued'",
        f"queue IN ({', '.join(['%s'] * len(queues))})",
        "run_after <= %s",
    ]
    params: list[object] = [*queues, adapt(now)]
    if include:
        where.append("(" + " OR ".join(["name LIKE %s ESCAPE '\\'"] * len(include)) + ")")
        params += [f"%{_like(text)}%" for text in include]
    for text in exclude:
        where.append("name NOT LIKE %s ESCAPE '\\'")
        params.append(f"%{_like(text)}%")
    lock = for_connection(connection).lock_clause
    # Only quoted identifiers and fixed clauses are interpolated; every value is a parameter.
    sql = (
        f"UPDATE {table} SET status = 'running', attempts = attempts + 1, "  # noqa: S608
        "locked_by = %s, locked_until = %s, started = %s "
        f"WHERE id IN (SELECT id FROM {table} WHERE {' AND '.join(where)} "
        f"ORDER BY priority DESC, run_after, id LIMIT %s{lock}) RETURNING {columns}"
    )
    jobs = list(
        Job.objects.using(connection.alias).raw(sql, [worker, adapt(lease_until), adapt(now), *params, limit])
    )
    jobs.sort(key=lambda job: (-job.priority, job.run_after, job.pk))
    return jobs


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
