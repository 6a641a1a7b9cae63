"""SQLite: one atomic ``UPDATE … RETURNING`` claims; workers poll (there is no NOTIFY)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from aio_async.dialects import INSERTED
from aio_async.models import Job

__all__ = ["DIALECT"]


class SQLite:
    """SQLite has one writer at a time, so the claim's single UPDATE is already exclusive."""

    lock_clause = ""
    can_notify = False

    async def listen(self, connection: BaseDatabaseWrapper) -> AsyncIterator[str]:
        """Never yields: SQLite has no notifications."""
        return
        yield  # pragma: no cover - makes this an async generator

    def cursor(self, connection: BaseDatabaseWrapper) -> CursorWrapper:
        """Django's own cursor."""
        return connection.cursor()

    def insert(self, connection: BaseDatabaseWrapper, jobs: list[Job]) -> None:
        """Multi-row INSERT … RETURNING, in batches that fit SQLite's limit on parameters."""
        quote = connection.ops.quote_name
        columns = ", ".join(quote(str(field.column)) for field in INSERTED)
        row = "(" + ", ".join(["%s"] * len(INSERTED)) + ")"
        size = max(1, connection.ops.bulk_batch_size(list(INSERTED), jobs))
        with connection.cursor() as cursor:
            for start in range(0, len(jobs), size):
                batch = jobs[start : start + size]
                cursor.execute(
                    f"INSERT INTO {quote(Job._meta.db_table)} ({columns}) "  # noqa: S608 - quoted names
                    f"VALUES {', '.join([row] * len(batch))} RETURNING {quote('id')}",
                    [
                        field.get_db_prep_save(getattr(job, field.attname), connection)
                        for job in batch
                        for field in INSERTED
                    ],
                )
                for job, (pk,) in zip(batch, cursor.fetchall(), strict=True):
                    job.pk = pk

    def direct(self, connection: BaseDatabaseWrapper) -> None:
        """None: claims go through Django's connection, on the ORM's thread."""
        return None


DIALECT = SQLite()
