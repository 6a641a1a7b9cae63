"""Per-database SQL: the claim query and the wake-up channel, one small module per vendor."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from aio_async.models import Job

if TYPE_CHECKING:
    from aio_async.dialects.postgresql import Direct

__all__ = ["CLAIMED", "INSERTED", "Claim", "Dialect", "claim", "for_connection", "in_queue_order"]

#: The columns a claim returns: all but ``meta`` and ``result``, which a worker never reads
#: (``Job.from_db`` leaves them deferred).
CLAIMED = tuple(
    str(field.column) for field in Job._meta.concrete_fields if field.name not in ("meta", "result")
)
#: The fields a new job is written with: all but the id, which the database assigns.
INSERTED = tuple(field for field in Job._meta.concrete_fields if not field.primary_key)


class Dialect(Protocol):
    """What the queue needs from a database beyond the ORM."""

    #: Appended to the claim's inner SELECT (PostgreSQL: FOR UPDATE SKIP LOCKED).
    lock_clause: str
    #: True when the database can wake a worker (LISTEN/NOTIFY); otherwise workers poll.
    can_notify: bool

    def listen(self, connection: BaseDatabaseWrapper) -> AsyncIterator[str]:
        """Yield the queue name of every wake-up, on a connection of its own."""

    def cursor(self, connection: BaseDatabaseWrapper) -> CursorWrapper:
        """A cursor on ``connection`` for the queue's own statements, prepared where possible."""

    def insert(self, connection: BaseDatabaseWrapper, jobs: list[Job]) -> None:
        """INSERT new jobs through ``connection`` (in its transaction) and set their ids."""

    def direct(self, connection: BaseDatabaseWrapper) -> Direct | None:
        """An asyncio connection of the worker's own for claims and leases, if the database has one."""


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


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim: lease up to ``limit`` due jobs of ``queues`` to ``worker`` until ``lease_until``.

    ``include`` and ``exclude`` keep or drop jobs whose name contains one of the given strings.
    """

    worker: str
    queues: tuple[str, ...]
    limit: int
    now: datetime.datetime
    lease_until: datetime.datetime
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def statement(
        self,
        quote: Callable[[str], str],
        lock_clause: str,
        adapt: Callable[[datetime.datetime], object] = lambda moment: moment,
    ) -> tuple[str, list[object]]:
        """The claim's UPDATE and its parameters, with datetimes passed through ``adapt``.

        One UPDATE over the first due rows (priority descending, then ``run_after``, then
        id), with the dialect's lock clause on the inner SELECT.
        """
        table = quote(Job._meta.db_table)
        where = [
            "status = 'queued'",
            f"queue IN ({', '.join(['%s'] * len(self.queues))})",
            "run_after <= %s",
        ]
        params: list[object] = [
            self.worker,
            adapt(self.lease_until),
            adapt(self.now),
            *self.queues,
            adapt(self.now),
        ]
        if self.include:
            where.append("(" + " OR ".join(["name LIKE %s ESCAPE '\\'"] * len(self.include)) + ")")
            params += [f"%{_like(text)}%" for text in self.include]
        for text in self.exclude:
            where.append("name NOT LIKE %s ESCAPE '\\'")
            params.append(f"%{_like(text)}%")
        # Only quoted identifiers and fixed clauses are interpolated; every value is a parameter.
        sql = (
            f"UPDATE {table} SET status = 'running', attempts = attempts + 1, "  # noqa: S608
            "locked_by = %s, locked_until = %s, started = %s "
            f"WHERE id IN (SELECT id FROM {table} WHERE {' AND '.join(where)} "
            f"ORDER BY priority DESC, run_after, id LIMIT %s{lock_clause}) "
            f"RETURNING {', '.join(quote(column) for column in CLAIMED)}"
        )
        return sql, [*params, self.limit]


def in_queue_order(jobs: list[Job]) -> list[Job]:
    """``jobs`` sorted as the claim chose them (RETURNING does not keep that order)."""
    return sorted(jobs, key=lambda job: (-job.priority, job.run_after, job.pk))


def claim(connection: BaseDatabaseWrapper, request: Claim) -> list[Job]:
    """Atomically lease the jobs ``request`` asks for, through Django's ORM; return them in order."""
    sql, params = request.statement(
        connection.ops.quote_name,
        for_connection(connection).lock_clause,
        connection.ops.adapt_datetimefield_value,
    )
    return in_queue_order(list(Job.objects.using(connection.alias).raw(sql, params)))


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
