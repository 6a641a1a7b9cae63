"""PostgreSQL: ``FOR UPDATE SKIP LOCKED`` claims and LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

from collections.abc import AsyncIterator

from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["CHANNEL", "DIALECT"]

CHANNEL = "aio_async"


class PostgreSQL:
    """Claims skip rows another worker holds; NOTIFY rides in the scheduling transaction."""

    lock_clause = " FOR UPDATE SKIP LOCKED"
    can_notify = True

    def notify(self, connection: BaseDatabaseWrapper, queue: str) -> None:
        """NOTIFY inside the caller's transaction, so it is delivered only on commit."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, queue])

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
