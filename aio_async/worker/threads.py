"""The worker's job threads, and the store it opens on the queue's database.

Sync jobs run in a bounded pool of threads, each with its own Django connection
(``sync_to_async(thread_sensitive=False)`` on the pool): ``bridge.JobThread`` runs one attempt
and its completion in one transaction there. ``open_store`` gives a worker its store: on
PostgreSQL with psycopg 3 over the worker's own asyncio connections, elsewhere over Django's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections

from aio_async.bridge import JobThread
from aio_async.conf import QueueSettings
from aio_async.store.database import DatabaseStore
from aio_async.store.drivers.django import DjangoConnector, prepared, psycopg3
from aio_async.values import Attempt, Checkpoint, ClaimRequest, ErrorInfo, Outcome

__all__ = ["JobThreads", "open_store"]


class JobThreads:
    """A pool of ``concurrency`` threads running sync jobs' attempts, one connection each."""

    def __init__(self, settings: QueueSettings, worker_id: str, concurrency: int) -> None:
        self.concurrency = concurrency
        self._pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="aio_async-job")
        thread = JobThread(settings.database, worker_id, settings)
        self._in_thread = sync_to_async(thread.run, thread_sensitive=False, executor=self._pool)
        self._step_in_thread = sync_to_async(thread.run_step, thread_sensitive=False, executor=self._pool)

    async def run(
        self, attempt: Attempt, call: Callable[[], Any], returned: Callable[[], None]
    ) -> tuple[Outcome, ErrorInfo | None]:
        """Run a sync job's attempt and its completion in one transaction, in a job thread."""
        return await self._in_thread(attempt, call, returned)

    async def run_step(
        self, attempt: Attempt, point: Checkpoint, call: Callable[[], Any]
    ) -> tuple[bool, Any]:
        """Run a coroutine job's sync step and its checkpoint in one transaction, in a job thread."""
        return await self._step_in_thread(attempt, point, call)

    async def close(self) -> None:
        """Close each thread's connection (a barrier gives every thread one close), then the pool."""
        barrier = threading.Barrier(self.concurrency)

        def close_here() -> None:
            barrier.wait(timeout=30)
            connections.close_all()

        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, close_here) for _ in range(self.concurrency)),
            return_exceptions=True,
        )
        self._pool.shutdown(wait=False)


def open_store(
    settings: QueueSettings,
    worker_id: str,
    *,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> DatabaseStore:
    """The store for the queue's database: on PostgreSQL (psycopg 3) the worker's own connection."""
    request = ClaimRequest(
        worker_id=worker_id,
        queues=() if "*" in settings.queues else settings.queues,
        lease=datetime.timedelta(seconds=settings.lease_seconds),
        include=include,
        exclude=exclude,
    )
    connection = connections[settings.database]
    jobs = JobThreads(settings, worker_id, settings.concurrency)
    if connection.vendor == "postgresql" and psycopg3():
        from aio_async.store.drivers.psycopg import PsycopgConnector  # psycopg 3 only: an optional extra

        # Claims and lease renewals commit without waiting for the WAL flush: lost in a server
        # crash, a claim leaves its job queued and its attempt not begun (the worker's fenced
        # writes then match nothing), and a renewal is made again. Every write that records
        # how an attempt ended waits for the flush, which also makes every earlier claim durable.
        # Not behind a pooler (LISTEN set apart, or off): its server connections are shared, and
        # the setting would stay on them for every other client.
        prepare = prepared(connection)
        pooled = settings.listen is not True
        listen_on = connections[settings.listen] if isinstance(settings.listen, str) else None
        return DatabaseStore(
            settings,
            request,
            PsycopgConnector(
                connection,
                prepared=prepare,
                durable=pooled,
                listen_on=listen_on,
                listens=settings.listen is not False,
            ),
            jobs,
            settings.concurrency,
            recorder=PsycopgConnector(connection, prepared=prepare),
        )
    connector = DjangoConnector(settings.database)
    return DatabaseStore(settings, request, connector, jobs, settings.concurrency)
