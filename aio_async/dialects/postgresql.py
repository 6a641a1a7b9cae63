"""PostgreSQL: ``FOR UPDATE SKIP LOCKED`` claims, LISTEN/NOTIFY wake-ups, and the worker's own
asyncio connection.

The NOTIFY itself is sent by a trigger on the job table (migration 0002), inside the
transaction that queues the job. A worker claims, renews leases and records coroutine jobs'
completions on a psycopg ``AsyncConnection`` of its own, on the event loop: no thread hop
and no ORM between a wake-up and a claimed job.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

from aio_async.dialects import CLAIMED, INSERTED, Claim, in_queue_order
from aio_async.models import Job, Status

__all__ = ["CHANNEL", "DIALECT", "Direct"]

CHANNEL = "aio_async"

logger = logging.getLogger("aio_async.dialects")


def connection_params(connection: BaseDatabaseWrapper) -> dict[str, Any]:
    """psycopg ``connect()`` arguments for a connection of our own to ``connection``'s database."""
    params = connection.get_connection_params()
    for django_only in ("cursor_factory", "context", "server_side_binding", "prepare_threshold"):
        params.pop(django_only, None)
    return params


class PostgreSQL:
    """Claims skip rows another worker holds; workers LISTEN for the table's trigger."""

    lock_clause = " FOR UPDATE SKIP LOCKED"
    can_notify = True

    def __init__(self) -> None:
        self._inserts: dict[bool, str] = {}

    async def listen(self, connection: BaseDatabaseWrapper) -> AsyncIterator[str]:
        """LISTEN on a dedicated autocommit psycopg connection and yield each payload."""
        params = connection_params(connection)
        async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as listener:
            await listener.execute(f"LISTEN {CHANNEL}")
            yield ""  # listening now: the caller may have missed wake-ups until this point
            async for notice in listener.notifies():
                yield notice.payload

    def insert(self, connection: BaseDatabaseWrapper, jobs: list[Job]) -> None:
        """One INSERT: of a VALUES row for one job, of unnest(one array per column) for many.

        The statement's text is the same for two jobs or ten thousand, and its values travel
        as bound arrays rather than as SQL text, so psycopg neither parses nor quotes a query
        per job. It runs on Django's connection, inside the caller's transaction, and
        through Django's cursor wrapper (query logging, execute wrappers, error translation).
        """
        many = len(jobs) > 1
        columns: list[Any] = []
        for field in INSERTED:
            values = [getattr(job, field.attname) for job in jobs]
            if field.get_internal_type() == "JSONField":  # sent as text, read as jsonb
                values = [None if value is None else json.dumps(value) for value in values]
            columns.append(values if many else values[0])
        with self.cursor(connection) as cursor:
            cursor.execute(self._insert_statement(connection, many), columns)
            for job, (pk,) in zip(jobs, cursor.fetchall(), strict=True):
                job.pk = pk

    def cursor(self, connection: BaseDatabaseWrapper) -> CursorWrapper:
        """A cursor on Django's connection (its transaction) that binds values on the server.

        Django's default cursor binds on the client, quoting every value into the SQL text,
        and so can never run a prepared statement. This one is wrapped as Django wraps its own
        (query logging, execute wrappers, Django's exceptions), and psycopg prepares its
        statements when the database's ``OPTIONS`` set ``prepare_threshold``.
        """
        connection.ensure_connection()
        connection.validate_thread_sharing()
        wrapper = CursorDebugWrapper if connection.queries_logged else CursorWrapper
        return wrapper(psycopg.Cursor(connection.connection), connection)

    def _insert_statement(self, connection: BaseDatabaseWrapper, many: bool) -> str:
        # Built once: column types and quoting are the same on every PostgreSQL connection.
        if many not in self._inserts:
            quote = connection.ops.quote_name
            array = "[]" if many else ""
            values = ", ".join(f"%b::{field.db_type(connection)}{array}" for field in INSERTED)
            # unnest() costs more to plan than a VALUES row, so one job goes as a row. Only
            # quoted names and column types are interpolated; every value is a parameter.
            source = f"SELECT * FROM unnest({values})" if many else f"VALUES ({values})"  # noqa: S608
            self._inserts[many] = (
                f"INSERT INTO {quote(Job._meta.db_table)} "
                f"({', '.join(quote(str(field.column)) for field in INSERTED)}) "
                f"{source} RETURNING {quote('id')}"
            )
        return self._inserts[many]

    def direct(self, connection: BaseDatabaseWrapper) -> Direct:
        """The worker's own asyncio connection to ``connection``'s database."""
        return Direct(connection)


class Direct:
    """An autocommit ``AsyncConnection`` for claims, lease renewals and coroutine completions.

    Opened on first use and dropped when it breaks; the next call opens a new one. Like
    Django's connections, it prepares statements on the server only when the database's
    ``OPTIONS`` set ``prepare_threshold`` (Django leaves it off for connection poolers).
    """

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.alias = connection.alias
        self._params = connection_params(connection)
        # As Django's own connections do: off unless the database's OPTIONS turn it on.
        self._prepare_threshold = connection.get_connection_params().get("prepare_threshold")
        self._quote = connection.ops.quote_name
        self._table = self._quote(Job._meta.db_table)
        self._connection: psycopg.AsyncConnection[Any] | None = None
        # Claims, heartbeats and completions share the connection (psycopg serialises their
        # statements); the lock keeps two of them from opening a replacement each.
        self._connecting = asyncio.Lock()

    async def _connected(self) -> psycopg.AsyncConnection[Any]:
        async with self._connecting:
            if self._connection is None or self._connection.closed:
                self._connection = await psycopg.AsyncConnection.connect(
                    **self._params, autocommit=True, prepare_threshold=self._prepare_threshold
                )
            return self._connection

    async def _execute(self, sql: str, params: list[Any], *, retry: bool = False) -> list[tuple[Any, ...]]:
        """Run one statement; with ``retry``, once more on a new connection if this one was dead."""
        connection = await self._connected()
        try:
            cursor = await connection.execute(sql, params)
            return await cursor.fetchall()
        except psycopg.Error as exc:
            if not (connection.broken or connection.closed):
                raise
            if self._connection is connection:  # not yet replaced by another statement's retry
                self._connection = None
            await connection.close()
            if not retry:
                raise
            logger.info("Reconnecting after %s: %s", type(exc).__name__, exc, extra={"action": "reconnect"})
            return await self._execute(sql, params)

    async def claim(self, request: Claim) -> list[Job]:
        """Lease the jobs ``request`` asks for in one statement; return them in queue order."""
        rows = await self._execute(*request.statement(self._quote, DIALECT.lock_clause))
        return in_queue_order([Job.from_db(self.alias, CLAIMED, row) for row in rows])

    async def heartbeat(self, job_ids: list[int], worker: str, until: datetime.datetime) -> int:
        """Extend ``worker``'s leases on ``job_ids`` to ``until``; return how many it still holds."""
        rows = await self._execute(
            f"UPDATE {self._table} SET locked_until = %s "  # noqa: S608 - a quoted identifier
            "WHERE id = ANY(%s) AND status = 'running' AND locked_by = %s RETURNING id",
            [until, job_ids, worker],
        )
        return len(rows)

    async def complete(
        self, finished: list[tuple[Job, Any]], worker: str, now: datetime.datetime
    ) -> set[int]:
        """Mark jobs succeeded with their results in one fenced statement; return the ids it held.

        A job is marked only while it is still running under the attempt and worker that
        claimed it, as ``store.complete`` marks a sync job.
        """
        rows = await self._execute(
            f"UPDATE {self._table} AS job SET status = %s, result = done.result::jsonb, "  # noqa: S608
            "executed = %s, locked_until = NULL "
            "FROM unnest(%b::bigint[], %b::integer[], %b::text[]) AS done(id, attempts, result) "
            "WHERE job.id = done.id AND job.attempts = done.attempts "
            "AND job.status = %s AND job.locked_by = %s RETURNING job.id",
            [
                Status.SUCCEEDED.value,
                now,
                [job.pk for job, _ in finished],
                [job.attempts for job, _ in finished],
                [None if result is None else json.dumps(result) for _, result in finished],
                Status.RUNNING.value,
                worker,
            ],
            retry=True,  # fenced, so writing it twice cannot mark anything twice
        )
        return {row[0] for row in rows}

    async def close(self) -> None:
        """Close the connection, if open."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            await connection.close()


DIALECT = PostgreSQL()
