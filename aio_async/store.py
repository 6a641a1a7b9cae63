"""The store: the one interface through which the worker reaches the database.

The executor sees only ``Store``: claim, heartbeat, run a sync job, complete, fail, release,
rescue, listen. ``DatabaseStore`` implements it once over a *connector*, which runs the
statement sequences of ``operations`` on a connection:

- ``DjangoConnector``: Django's connection, on the thread of Django's async ORM. Any
  database; SQLite uses it (workers poll).
- ``postgres.PsycopgConnector``: the worker's own asyncio PostgreSQL connection, on the
  loop, with LISTEN/NOTIFY wake-ups.

A sync job's attempt runs in a job thread on that thread's own Django connection
(``bridge.JobThread``), whichever connector the store has. A fake store (see the unit tests)
lets the executor's state machine be tested without a database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import functools
import logging
import os
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from aio_async import operations, sql
from aio_async.bridge import JobThread, connection_lost, tidy_connections
from aio_async.conf import QueueSettings
from aio_async.operations import Attempt, ClaimRequest, ErrorInfo, Outcome

__all__ = ["CANCELLED", "QUEUES", "WAKE", "DatabaseStore", "DjangoConnector", "Notice", "Store", "open_store"]

logger = logging.getLogger("aio_async.store")

R = TypeVar("R")

#: What ``listen()`` yields: (``WAKE``, a queue name) as jobs become due, (``CANCELLED``,
#: comma-separated job ids) as running jobs are cancelled, and (``QUEUES``, a queue name) as
#: a queue is paused or resumed; first, after each (re)connection, (``WAKE``, ""): listening
#: from now on, and whatever was sent before was missed.
Notice = tuple[str, str]
WAKE = "wake"
CANCELLED = "cancelled"
QUEUES = "queues"


class Store(Protocol):
    """Every queue operation the worker needs, as the executor sees them."""

    async def claim(self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset()) -> list[Attempt]:
        """Lease up to ``limit`` due jobs to this worker (an isolated one only when ``alone``).

        Jobs of the ``paused`` queues stay queued.
        """

    async def claim_limited(
        self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset()
    ) -> list[Attempt]:
        """Lease up to ``limit`` due jobs with limits, as many as their keys allow."""

    async def paused(self) -> frozenset[str]:
        """The names of the paused queues."""

    async def register(self, started: datetime.datetime) -> None:
        """Record this worker (its host, pid, queues, concurrency, start) as alive now."""

    async def unregister(self) -> None:
        """Forget this worker (it stops), and workers not heard of for a day."""

    async def heartbeat(self, attempts: Sequence[Attempt]) -> set[int]:
        """Extend the leases of ``attempts``; return the job ids still held."""

    async def lost(self, attempts: Sequence[Attempt]) -> dict[int, str | None]:
        """Those of ``attempts`` that no longer hold their jobs, with each job's status now."""

    async def run_sync(
        self, attempt: Attempt, call: Callable[[], Any], returned: Callable[[], None]
    ) -> tuple[Outcome, ErrorInfo | None]:
        """Run a sync job and its completion in one transaction in a job thread; record a failure.

        Returns the outcome, and the error when the job raised. ``returned`` is called (from
        the job thread) once the function returned or raised.
        Raises ``bridge.NoConnection``, having written nothing, when the thread cannot reach
        the database.
        """

    async def complete(self, attempt: Attempt, result: Any) -> Outcome:
        """Mark a coroutine job's attempt succeeded with its JSON-ready result."""

    async def fail(
        self, attempt: Attempt, error: ErrorInfo, *, final: bool = False, cause: BaseException | None = None
    ) -> Outcome:
        """Record a failed attempt: an Error row, then a retry or, out of attempts, failure.

        ``final`` gives up at once. ``cause`` is the exception the job raised: one from a
        database connection that died is not the job's fault, and is retried at once.
        """

    async def release(self, attempt: Attempt) -> bool:
        """Give a job back to the queue, its attempt excused; False if it was no longer held."""

    async def snooze(self, attempt: Attempt, seconds: float) -> Outcome:
        """Requeue a coroutine job that raised Snooze, to run after ``seconds``, its attempt excused."""

    async def rescue(self) -> list[int]:
        """Requeue or fail the jobs of workers whose leases expired; return their ids."""

    def listen(self) -> AsyncIterator[Notice] | None:
        """Notices as jobs become due or are cancelled (PostgreSQL's NOTIFY), or None: poll instead."""

    async def check(self) -> list[str]:
        """Problems to warn about before the first claim; raises when the worker cannot start."""

    async def close(self) -> None:
        """Finish pending writes and close every connection."""


class DjangoConnector:
    """Runs operations on Django's connection, on the thread of Django's async ORM.

    That thread keeps its connection whatever ``CONN_MAX_AGE`` says, and replaces it only
    once it broke. Each operation runs whole in one call on the thread, so that the
    coroutine jobs' own queries on that thread never land inside its transaction.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.dialect = sql.for_vendor(connections[alias].vendor)
        self._on_thread = sync_to_async(self._run, thread_sensitive=True)

    async def run(self, make: sql.MakeOp[R], *, atomic: bool = False, retry: bool = False) -> R:
        """Run the operation ``make(dialect)``; with ``retry``, once more if the connection was dead."""
        return await self._on_thread(make, atomic, retry)

    def _run(self, make: sql.MakeOp[R], atomic: bool, retry: bool) -> R:
        tidy_connections()
        try:
            return self._once(make, atomic)
        except (OperationalError, InterfaceError) as exc:
            if not (retry and connection_lost(exc, self.alias)):
                raise
            logger.info("Reconnecting after %s", exc, extra={"action": "reconnect"})
            connections[self.alias].close()
            return self._once(make, atomic)

    def _once(self, make: sql.MakeOp[R], atomic: bool) -> R:
        connection = connections[self.alias]
        if not atomic:
            return sql.run_on(connection, make(self.dialect))
        with transaction.atomic(using=self.alias):
            return sql.run_on(connection, make(self.dialect))

    def listen(self) -> AsyncIterator[Notice] | None:
        """None: Django's connections cannot wait for notifications; the worker polls."""
        return None

    async def close(self) -> None:
        """Nothing of its own: the store closes the async ORM thread's connections."""


class Connector(Protocol):
    """How a store runs the statement sequences of ``operations`` on a connection."""

    dialect: sql.Dialect

    async def run(self, make: sql.MakeOp[R], *, atomic: bool = False, retry: bool = False) -> R:
        """Run the operation ``make(dialect)``, in one transaction when ``atomic``."""

    def listen(self) -> AsyncIterator[Notice] | None:
        """Notices as jobs become due or are cancelled, or None when the connection cannot listen."""

    async def close(self) -> None:
        """Close the connection."""


class DatabaseStore:
    """The Store on a real database: queue operations through a connector, sync jobs in threads."""

    def __init__(
        self,
        settings: QueueSettings,
        request: ClaimRequest,
        connector: Connector,
        concurrency: int,
        *,
        recorder: Connector | None = None,
    ) -> None:
        self.settings = settings
        self.request = request
        self.worker_id = request.worker_id
        self.connector = connector
        #: Where attempts' ends are written (completions, failures, releases, rescues): a
        #: second connection when there is one, so that a wave of completions never holds up
        #: the claim that refills the freed slots.
        self.recorder = recorder or connector
        self.concurrency = concurrency
        self._pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="aio_async-job")
        self._jobs = JobThread(settings.database, request.worker_id, settings)
        self._in_job_thread = sync_to_async(self._jobs.run, thread_sensitive=False, executor=self._pool)
        self._finished: list[tuple[Attempt, Any, asyncio.Future[Outcome]]] = []
        self._recorder: asyncio.Task[None] | None = None

    async def claim(self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset()) -> list[Attempt]:
        """Lease up to ``limit`` due jobs to this worker."""
        now = timezone.now()
        return await self.connector.run(
            lambda d: operations.claim(d, self.request, limit, alone, now, paused)
        )

    async def claim_limited(
        self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset()
    ) -> list[Attempt]:
        """Lease up to ``limit`` due jobs with limits, in a transaction that holds their keys."""
        return await self.connector.run(
            lambda d: operations.claim_limited(d, self.request, limit, alone, timezone.now, paused),
            atomic=True,
        )

    async def paused(self) -> frozenset[str]:
        """The names of the paused queues."""
        return await self.connector.run(_paused, retry=True)

    async def register(self, started: datetime.datetime) -> None:
        """Record this worker as alive now, with what it serves (at its start and each renewal)."""
        host, pid = socket.gethostname(), os.getpid()
        queues = ",".join(self.settings.queues)
        row = [self.worker_id, host, pid, queues, self.concurrency, started, timezone.now()]
        await self.recorder.run(lambda d: _one(sql.register_worker(), row), retry=True)

    async def unregister(self) -> None:
        """Forget this worker, and the workers not heard of for a day."""
        long_ago = timezone.now() - datetime.timedelta(days=1)
        await self.recorder.run(lambda d: _one(sql.forget_worker(), [self.worker_id, long_ago]), retry=True)

    async def heartbeat(self, attempts: Sequence[Attempt]) -> set[int]:
        """Extend this worker's leases on ``attempts``."""
        if not attempts:
            return set()
        until = timezone.now() + self.request.lease
        return await self.connector.run(
            lambda d: operations.heartbeat(d, attempts, self.worker_id, until), retry=True
        )

    async def lost(self, attempts: Sequence[Attempt]) -> dict[int, str | None]:
        """Those of ``attempts`` this worker no longer holds (cancelled, taken over), with their status."""
        if not attempts:
            return {}
        return await self.connector.run(lambda d: operations.lost(d, attempts, self.worker_id), retry=True)

    async def run_sync(
        self, attempt: Attempt, call: Callable[[], Any], returned: Callable[[], None]
    ) -> tuple[Outcome, ErrorInfo | None]:
        """Run a sync job's attempt in a job thread."""
        return await self._in_job_thread(attempt, call, returned)

    async def complete(self, attempt: Attempt, result: Any) -> Outcome:
        """Queue the completion; completions that pile up while one is written go in one batch."""
        outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._finished.append((attempt, result, outcome))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_completions(), name="record-completions")
        return await outcome  # cancelled with its job: the batch then leaves it alone

    async def _record_completions(self) -> None:
        while self._finished:
            batch, self._finished = self._finished, []
            finished = [(attempt, result) for attempt, result, _ in batch]
            now = timezone.now()
            try:
                held = await self.recorder.run(
                    functools.partial(
                        operations.complete, finished=finished, worker_id=self.worker_id, now=now
                    ),
                    atomic=any(
                        attempt.group_id is not None or attempt.has_dependents for attempt, _ in finished
                    ),
                    retry=True,  # fenced: writing it twice cannot mark anything twice
                )
            except Exception as exc:  # noqa: BLE001 - each job's task reports it
                for _, _, outcome in batch:
                    if not outcome.done():
                        outcome.set_exception(exc)
                continue
            for attempt, _, outcome in batch:
                if not outcome.done():
                    outcome.set_result(Outcome.SUCCEEDED if attempt.job_id in held else Outcome.LEASE_LOST)

    async def fail(
        self, attempt: Attempt, error: ErrorInfo, *, final: bool = False, cause: BaseException | None = None
    ) -> Outcome:
        """Record a failed attempt in a transaction of its own."""
        retry_now = False
        if isinstance(cause, OperationalError | InterfaceError):
            # A coroutine job's queries ran on the async ORM's thread: check its connection there.
            retry_now = await sync_to_async(self._discard_if_lost, thread_sensitive=True)(cause)
        now = timezone.now()
        decided = operations.verdict(attempt, self.settings, now, final=final, retry_now=retry_now)
        recorded = await self.recorder.run(
            lambda d: operations.fail(d, attempt, error, self.worker_id, decided, now),
            atomic=True,
            retry=True,
        )
        if not recorded:
            return Outcome.LEASE_LOST
        return Outcome.FAILED if decided.give_up else Outcome.RETRYING

    def _discard_if_lost(self, cause: BaseException) -> bool:
        """True when ``cause`` came from this thread's connection dying; it is closed then."""
        lost = connection_lost(cause, self.settings.database)
        tidy_connections()
        return lost

    async def release(self, attempt: Attempt) -> bool:
        """Give a job back to the queue, its attempt excused."""
        now = timezone.now()
        return await self.recorder.run(
            lambda d: operations.release(d, attempt, self.worker_id, now), atomic=True, retry=True
        )

    async def snooze(self, attempt: Attempt, seconds: float) -> Outcome:
        """Requeue a coroutine job that raised Snooze, its attempt excused."""
        later = timezone.now() + datetime.timedelta(seconds=seconds)
        held = await self.recorder.run(
            lambda d: operations.snooze(d, attempt, self.worker_id, later), retry=True
        )
        return Outcome.SNOOZED if held else Outcome.LEASE_LOST

    async def rescue(self) -> list[int]:
        """Requeue or fail the jobs whose lease expired, each in a transaction of its own.

        A row that cannot be rescued is logged and left for the next pass; it never stops
        the others.
        """
        # The async ORM's thread serves coroutine jobs; tidy its connection now and then, as
        # the job threads tidy theirs before each job.
        await sync_to_async(tidy_connections, thread_sensitive=True)()
        now = timezone.now()
        found = await self.recorder.run(lambda d: operations.expired(d, self.worker_id, now))
        rescued = []
        for attempt, lost_worker, neighbours in found:
            try:
                done = await self.recorder.run(
                    functools.partial(
                        operations.rescue,
                        attempt=attempt,
                        lost_worker=lost_worker,
                        neighbours=neighbours,
                        rescuer=self.worker_id,
                        settings=self.settings,
                        now=now,
                    ),
                    atomic=True,
                )
            except Exception as exc:  # noqa: BLE001 - one row must not stop the rescue of the rest
                logger.error(
                    "Cannot rescue job %s: %s: %s",
                    attempt.job_id,
                    type(exc).__name__,
                    exc,
                    extra={"action": "rescue_failed", "job_id": attempt.job_id},
                )
                continue
            if done:
                rescued.append(attempt.job_id)
        settled = await self.recorder.run(lambda d: operations.settle_unsettled(d, now), atomic=True)
        if settled:
            logger.warning(
                "Settled %s waiting job(s) that nothing else would settle (a worker lost between a "
                "completion and its dependents, or jobs deleted they waited for): %s",
                len(settled),
                settled,
                extra={"action": "dependents_settled", "job_ids": settled},
            )
        return rescued

    def listen(self) -> AsyncIterator[Notice] | None:
        """The connector's notices, if it has them."""
        return self.connector.listen()

    async def check(self) -> list[str]:
        """Refuse to start on an unmigrated database; warn when connections will run short.

        The worker's own connections are opened first, before job threads can take the
        server's last free ones: without them it could claim jobs it cannot record.
        """
        if self.recorder is not self.connector:
            for connector in (self.connector, self.recorder):
                with contextlib.suppress(Exception):  # a database that is away: the claim loop waits
                    await connector.run(_ping)
        return await sync_to_async(self._check, thread_sensitive=True)()

    def _check(self) -> list[str]:
        from django.core.exceptions import ImproperlyConfigured
        from django.db.migrations.loader import MigrationLoader

        connection = connections[self.settings.database]
        try:
            loader = MigrationLoader(connection)
        except (OperationalError, InterfaceError) as exc:
            if _NO_SUCH_DATABASE.search(str(exc)):  # not an outage: waiting would wait for good
                name = connection.settings_dict.get("NAME")
                raise ImproperlyConfigured(
                    f"database {self.settings.database!r} ({name!r}) does not exist on the server: "
                    f"create it (createdb {name}) or fix DATABASES[{self.settings.database!r}]['NAME']"
                ) from None
            return [f"Cannot reach database {self.settings.database!r} yet ({exc}); waiting for it"]
        missing = sorted(
            name
            for app, name in loader.graph.nodes
            if app == "aio_async" and (app, name) not in loader.applied_migrations
        )
        if missing:
            raise ImproperlyConfigured(
                f"database {self.settings.database!r} lacks aio_async's migrations {', '.join(missing)}: "
                "run `python manage.py migrate` before starting a worker"
            )
        if connection.vendor != "postgresql":
            return []
        problems = []
        if not sql.psycopg3():
            # Advice, not a problem: polling works, and -q (warnings only) hides it.
            logger.info(
                "Django runs on psycopg2 here: the worker cannot LISTEN, so it polls every %g s. "
                "Install psycopg 3 (pip install 'psycopg[binary]') to pick jobs up as they are committed.",
                self.settings.poll_interval,
                extra={"action": "polling_without_listen"},
            )
        elif self.settings.listen is not False:
            problems += listen_problems(self.settings)
        own = 3 if self.recorder is self.connector else 4  # LISTEN, claims, ends written, the async ORM
        needed = self.concurrency + own
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('max_connections')::int - "
                "current_setting('superuser_reserved_connections')::int, "
                "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
            )
            allowed, in_use = cursor.fetchone()
        if needed <= allowed - in_use:
            return problems
        return [
            *problems,
            f"This worker needs up to {needed} database connections "
            f"(concurrency {self.concurrency} + {own}); the server allows {allowed} and {in_use} are "
            "in use: it will run fewer jobs at once when it cannot connect. Lower --concurrency or "
            "raise PostgreSQL's max_connections.",
        ]

    async def close(self) -> None:
        """Finish pending completions, then close every thread's connection and the pool."""
        if self._recorder is not None:
            with contextlib.suppress(Exception):
                await self._recorder
        await self.connector.close()
        if self.recorder is not self.connector:
            await self.recorder.close()
        # The async ORM's thread served coroutine jobs and the start-up checks.
        await sync_to_async(connections.close_all, thread_sensitive=True)()
        # Each pool thread owns its own connection; a barrier gives every thread one close.
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


def listen_problems(settings: QueueSettings) -> list[str]:
    """A warning when NOTIFY does not reach a LISTEN on the connection the worker listens on.

    Probed with two connections (PostgreSQL, psycopg 3): a pooler in transaction mode loses
    notifications, and the worker would then find jobs only by polling.
    """
    from aio_async.postgres import listen_works

    alias = settings.listen if isinstance(settings.listen, str) else settings.database
    try:
        if listen_works(connections[alias]):
            return []
    except Exception:  # noqa: BLE001 - an unreachable database is reported where it matters
        return []
    return [
        f"A NOTIFY did not reach a LISTEN on database {alias!r} within 2 s: it goes through a "
        "pooler in transaction mode, or the like. Workers will find jobs only by polling every "
        f"{settings.poll_interval:g} s. Set AIO_ASYNC['LISTEN'] to the alias of a direct "
        "connection to the database, or to False to poll without trying."
    ]


def _ping(dialect: sql.Dialect) -> sql.Op[None]:
    """One round trip: opens a connector's connection."""
    yield "SELECT 1", []


def _one(statement: str, params: list[Any]) -> sql.Op[None]:
    """One statement whose rows do not matter."""
    yield statement, params


def _paused(dialect: sql.Dialect) -> sql.Op[frozenset[str]]:
    """The names of the paused queues."""
    rows = yield sql.paused_queues(), []
    return frozenset(row[0] for row in rows)


#: PostgreSQL's refusal of a connection to a database that does not exist (its English text).
_NO_SUCH_DATABASE = re.compile(r'database "[^"]*" does not exist')


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
    if connection.vendor == "postgresql" and sql.psycopg3():
        from aio_async.postgres import PsycopgConnector

        # Claims and lease renewals commit without waiting for the WAL flush: lost in a server
        # crash, a claim leaves its job queued and its attempt not begun (the worker's fenced
        # writes then match nothing), and a renewal is made again. Every write that records
        # how an attempt ended waits for the flush, which also makes every earlier claim durable.
        # Not behind a pooler (LISTEN set apart, or off): its server connections are shared, and
        # the setting would stay on them for every other client.
        prepared = sql.prepared(connection)
        pooled = settings.listen is not True
        listen_on = connections[settings.listen] if isinstance(settings.listen, str) else None
        return DatabaseStore(
            settings,
            request,
            PsycopgConnector(
                connection,
                prepared=prepared,
                durable=pooled,
                listen_on=listen_on,
                listens=settings.listen is not False,
            ),
            settings.concurrency,
            recorder=PsycopgConnector(connection, prepared=prepared),
        )
    connector = DjangoConnector(settings.database)
    return DatabaseStore(settings, request, connector, settings.concurrency)
