"""PostgreSQL: ``FOR UPDATE SKIP LOCKED`` claims and LISTEN/NOTIFY wake-ups.

The NOTIFY itself is sent by a trigger on the job table (migration 0002), inside the
transaction that queues the job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["CHANNEL", "DIALECT"]

CHANNEL = "aio_async"


class PostgreSQL:
    """Claims skip rows another worker holds; workers LISTEN for the table's trigger."""

    lock_clause = " FOR UPDATE SKIP LOCKED"
    can_notify = True

    async def listen(self, connection: BaseDatabaseWrapper) -> AsyncIterator[str]:
        """LISTEN on a dedicated autocommit psycopg connection and yield each payload."""
        import psycopg

        params = connection.get_connection_params()
        for django_only in ("cursor_factory", "context", "server_side_binding", "prepare_threshold"):
            params.pop(django_only, None)
        async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as listener:
            await listener.execute(f"LISTEN {CHANNEL}")
            yield ""  # listening now: the caller may have missed wake-ups until this point
            async for notice in listener.notifies():
                yield notice.payload


DIALECT = PostgreSQL()
