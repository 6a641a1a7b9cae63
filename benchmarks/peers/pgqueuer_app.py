"""pgqueuer app for pgqueuer_bench.py: one async no-op entrypoint on asyncpg, pgqueuer's own driver.

The worker loads it as ``pgqueuer_app:main`` through ``pgqueuer.run`` (what ``pgq run`` calls).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    """Yield a PgQueuer on one asyncpg connection, with the ``noop`` entrypoint."""
    connection = await asyncpg.connect(os.environ["BENCH_PG_DSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        """Do nothing."""

    try:
        yield pgq
    finally:
        await connection.close()
