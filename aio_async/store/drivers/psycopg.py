"""The worker's own asyncio PostgreSQL connection: queue operations on the loop, and LISTEN.

Claims, lease renewals, coroutine jobs' completions and the queue's bookkeeping run on a
psycopg ``AsyncConnection`` of the worker's own, on the event loop: no thread hop and no ORM
between a wake-up and a claimed job. Wake-ups come on a second connection that LISTENs for
the NOTIFY that a trigger on the job table sends (migration 0002) inside the transaction
that queues a job, so it is delivered only on commit.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

import psycopg
from django.db.backends.base.base import BaseDatabaseWrapper

from aio_async.store.dialects import POSTGRESQL
from aio_async.store.protocol import CANCELLED, QUEUES, WAKE
from aio_async.store.statements import CANCEL_CHANNEL, QUEUES_CHANNEL, MakeOp, Op

__all__ = ["CHANNEL", "PsycopgConnector", "connection_params", "listen_works", "notifications"]

CHANNEL = "aio_async"
#: What each channel's notices are, as ``listen()`` yields them (see ``protocol.Notice``).
_KINDS = {CHANNEL: WAKE, CANCEL_CHANNEL: CANCELLED, QUEUES_CHANNEL: QUEUES}

logger = logging.getLogger("aio_async.postgres")

R = TypeVar("R")


def connection_params(connection: BaseDatabaseWrapper) -> dict[str, Any]:
    """psycopg ``connect()`` arguments for a connection of our own to ``connection``'s database."""
    params = connection.get_connection_params()
    for django_only in ("cursor_factory", "context", "server_side_binding", "prepare_threshold", "pool"):
        params.pop(django_only, None)
    return params


class PsycopgConnector:
    """An autocommit ``AsyncConnection`` that runs the queue's operations, one at a time.

    Opened on first use and dropped when it breaks; the next operation opens a new one.
    Statements run prepared unless ``prepared`` is off (see ``drivers.django.prepared``). A connection
    that is not ``durable`` commits without waiting for the WAL flush: for claims and lease
    renewals only, whose loss in a server crash puts a job back as it was (see ``open_store``).
    """

    dialect = POSTGRESQL

    def __init__(
        self,
        connection: BaseDatabaseWrapper,
        *,
        prepared: bool = True,
        durable: bool = True,
        listen_on: BaseDatabaseWrapper | None = None,
        listens: bool = True,
    ) -> None:
        self._params = connection_params(connection)
        #: Where LISTEN goes: a direct connection when the queue's goes through a pooler; None: poll.
        self._listen_params = connection_params(listen_on or connection) if listens else None
        self._prepare = prepared
        self._durable = durable
        self._connection: psycopg.AsyncConnection[Any] | None = None
        # One operation at a time: a transaction must not take in another's statements, and
        # two operations that find the connection dead must not open a replacement each.
        self._lock = asyncio.Lock()

    async def _connected(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is None or self._connection.closed:
            connection = await psycopg.AsyncConnection.connect(**self._params, autocommit=True)
            if not self._durable:
                await connection.execute("SET synchronous_commit = off")
            self._connection = connection
        return self._connection

    async def run(self, make: MakeOp[R], *, atomic: bool = False, retry: bool = False) -> R:
        """Run the operation ``make(dialect)``; with ``retry``, once more on a new connection if dead."""
        async with self._lock:
            connection = await self._connected()
            try:
                return await self._run(connection, make, atomic)
            except psycopg.Error as exc:
                if not (connection.broken or connection.closed):
                    raise
                self._connection = None
                await connection.close()
                if not retry:
                    raise
                logger.info(
                    "Reconnecting after %s: %s", type(exc).__name__, exc, extra={"action": "reconnect"}
                )
                return await self._run(await self._connected(), make, atomic)

    async def _run(self, connection: psycopg.AsyncConnection[Any], make: MakeOp[R], atomic: bool) -> R:
        op = make(self.dialect)
        if atomic:
            async with connection.transaction():
                return await self._drive(connection, op)
        return await self._drive(connection, op)

    async def _drive(self, connection: psycopg.AsyncConnection[Any], op: Op[R]) -> R:
        try:
            text, params = next(op)
            while True:
                cursor = await connection.execute(text, params, prepare=self._prepare)
                rows = await cursor.fetchall() if cursor.description else []
                text, params = op.send(rows)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def listen(self) -> AsyncIterator[tuple[str, str]] | None:
        """The notices of ``_notices``, or None when LISTEN is off (``AIO_ASYNC["LISTEN"] = False``)."""
        if self._listen_params is None:
            return None
        return self._notices(self._listen_params)

    async def _notices(self, params: dict[str, Any]) -> AsyncIterator[tuple[str, str]]:
        """LISTEN on a dedicated connection; yield ("wake", queue), ("cancelled", job ids), ("queues", queue).

        Yields ``("wake", "")`` first, once listening: wake-ups before that moment were
        missed, so the caller should look for due jobs then.
        """
        async for notice in notifications(params, (CHANNEL, CANCEL_CHANNEL, QUEUES_CHANNEL)):
            yield ("wake", "") if notice is None else (_KINDS.get(notice[0], "wake"), notice[1])

    async def close(self) -> None:
        """Close the connection, if open."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            await connection.close()


async def notifications(
    params: dict[str, Any], channels: Iterable[str]
) -> AsyncIterator[tuple[str, str] | None]:
    """LISTEN on ``channels`` on a connection of its own; None once listening, then (channel, payload).

    The one LISTEN loop of the package: the worker's wake-ups (``PsycopgConnector.listen``)
    and the waiters of ``result()`` (``store.results.Listener``). Notifications sent before the
    None were missed: the caller looks at the state it waits on then. A broken connection
    raises ``psycopg.Error``; closing the iterator closes the connection.
    """
    async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as listener:
        await listener.execute("; ".join(f"LISTEN {channel}" for channel in channels))
        yield None
        async for notice in listener.notifies():
            yield notice.channel, notice.payload


def listen_works(connection: BaseDatabaseWrapper, timeout: float = 2.0) -> bool:
    """Whether a NOTIFY reaches a LISTEN on ``connection``'s database: a probe, two connections.

    Through a pooler in transaction mode (PgBouncer) the listening server connection goes
    back to the pool after the LISTEN, and the notification never reaches the client.
    """
    params = connection_params(connection)
    channel = f"aio_async_probe_{secrets.token_hex(6)}"
    with (
        psycopg.connect(**params, autocommit=True) as listener,
        psycopg.connect(**params, autocommit=True) as sender,
    ):
        listener.execute(f"LISTEN {channel}")
        sender.execute("SELECT pg_notify(%s, 'probe')", [channel])
        return any(True for _ in listener.notifies(timeout=timeout, stop_after=1))
