"""SQLite: one atomic ``UPDATE … RETURNING`` claims; workers poll (there is no NOTIFY)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["DIALECT"]


class SQLite:
    """SQLite has one writer at a time, so the claim's single UPDATE is already exclusive."""

    lock_clause = ""
    can_notify = False

    async def listen(self, connection: BaseDatabaseWrapper) -> AsyncIterator[str]:
        """Never yields: SQLite has no notifications."""
        return
        yield  # pragma: no cover - makes this an async generator

    def direct(self, connection: BaseDatabaseWrapper) -> None:
        """None: claims go through Django's connection, on the ORM's thread."""
        return None


DIALECT = SQLite()
