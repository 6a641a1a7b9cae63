"""The Store on a real database: queue operations through a connector, sync jobs in job threads.

``DatabaseStore`` implements ``protocol.Store`` once over a *connector*, which runs the
statement sequences of ``store.operations`` on a connection:

- ``drivers.django.DjangoConnector``: Django's connection, on the thread of Django's async
  ORM. Any database; SQLite uses it (workers poll).
- ``drivers.psycopg.PsycopgConnector``: the worker's own asyncio PostgreSQL connection, on
  the loop, with LISTEN/NOTIFY wake-ups.

A sync job's attempt runs in a job thread on that thread's own Django connection, through
the ``JobRunner`` the worker gives it (``worker.threads``). Coroutine jobs' completions that
pile up while one batch is written go in the next batch, in one statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connections
from django.utils import timezone

from aio_async.conf import QueueSettings
from aio_async.store import journal, operations, preflight, statements
from aio_async.store.dialects import Dialect
from aio_async.store.drivers.django import connection_lost, tidy_connections
from aio_async.store.frontier import Frontier
from aio_async.store.protocol import Connector, JobRunner, Notice
from aio_async.store.statements import Op
from aio_async.values import Attempt, Checkpoint, ClaimRequest, ErrorInfo, Outcome

__all__ = ["DatabaseStore"]

_T = TypeVar("_T")

logger = logging.getLogger("aio_async.store")


class DatabaseStore:
    """The Store on a real database: queue operations through a connector, sync jobs in threads."""

    def __init__(
        self,
        settings: QueueSettings,
        request: ClaimRequest,
        connector: Connector,
        jobs: JobRunner,
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
        self.jobs = jobs
        self.concurrency = concurrency
        #: Where this worker's claims reached in its queues (PostgreSQL): see ``store.frontier``.
        self.frontier = (
            Frontier(settings.claim_frontier)
            if connector.dialect.frontier and settings.claim_frontier != "never"
            else None
        )
        self._completions: _Batches[Any] = _Batches(self._write_completions, "record-completions")
        self._checkpoints: _Batches[Checkpoint] = _Batches(self._write_checkpoints, "record-checkpoints")

    async def claim(
        self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset(), thorough: bool = False
    ) -> list[Attempt]:
        """Lease up to ``limit`` due jobs to this worker: past its frontier, or in a full claim.

        See ``store.frontier``: past the frontier first; finding nothing there, a little behind
        it (or, when ``thorough``, the whole queue); a full claim when the frontier is not in
        use or a sweep is due.
        """
        frontier = self.frontier
        if frontier is not None and frontier.claims_past(time.monotonic()):
            attempts = await self._claim_past(frontier, frontier.levels(paused), limit, alone)
            if attempts or (not thorough and not frontier.looks_back(time.monotonic())):
                return attempts
            if not thorough:
                return await self._claim_past(frontier, frontier.levels(paused, back=True), limit, alone)
        now = timezone.now()
        started = time.monotonic()
        attempts = await self.connector.run(
            lambda d: operations.claim(d, self.request, limit, alone, now, paused)
        )
        if frontier is not None:
            finished = time.monotonic()
            frontier.swept(finished, finished - started, attempts)
        return attempts

    async def _claim_past(
        self,
        frontier: Frontier,
        levels: list[tuple[str, int, datetime.datetime, int]],
        limit: int,
        alone: bool,
    ) -> list[Attempt]:
        """Lease due jobs past these positions of the frontier, and move it past them."""
        now = timezone.now()
        attempts = await self.connector.run(
            lambda d: operations.claim_after(d, self.request, limit, alone, now, levels)
        )
        frontier.advance(attempts)
        return attempts

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
        await self.recorder.run(lambda d: _one(statements.register_worker(), row), retry=True)

    async def unregister(self) -> None:
        """Forget this worker, and the workers not heard of for a day."""
        long_ago = timezone.now() - datetime.timedelta(days=1)
        await self.recorder.run(
            lambda d: _one(statements.forget_worker(), [self.worker_id, long_ago]), retry=True
        )

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
        return await self.jobs.run(attempt, call, returned)

    async def complete(self, attempt: Attempt, result: Any) -> Outcome:
        """Queue the completion; completions that pile up while one is written go in one batch."""
        return Outcome.SUCCEEDED if await self._completions.add(attempt, result) else Outcome.LEASE_LOST

    async def _write_completions(self, finished: list[tuple[Attempt, Any]]) -> Collection[int]:
        now = timezone.now()
        return await self.recorder.run(
            functools.partial(operations.complete, finished=finished, worker_id=self.worker_id, now=now),
            atomic=any(attempt.group_id is not None or attempt.has_dependents for attempt, _ in finished),
            retry=True,  # fenced: writing it twice cannot mark anything twice
        )

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
        """Requeue a coroutine job that raised Snooze, its attempt excused and recorded."""
        now = timezone.now()
        later = now + datetime.timedelta(seconds=seconds)
        held = await self.recorder.run(
            lambda d: operations.snooze(d, attempt, self.worker_id, later, now), atomic=True, retry=True
        )
        return Outcome.SNOOZED if held else Outcome.LEASE_LOST

    # Durable steps (``aio_async.steps``) ------------------------------------------------

    async def read_steps(self, attempt: Attempt) -> dict[str, Checkpoint]:
        """The journal of the attempt's job, by name."""
        return await self.recorder.run(lambda d: journal.read_steps(d, attempt.job_id), retry=True)

    async def checkpoint(self, attempt: Attempt, point: Checkpoint) -> bool:
        """Record a checkpoint under the job's fence; False if no longer held.

        Checkpoints that pile up while one is written go in one transaction, as completions do:
        each job's fence still decides for that job alone.
        """
        return await self._checkpoints.add(attempt, point)

    async def _write_checkpoints(self, points: list[tuple[Attempt, Checkpoint]]) -> Collection[int]:
        lease_end = timezone.now() + self.request.lease
        return await self.recorder.run(
            functools.partial(
                journal.checkpoints, points=points, worker_id=self.worker_id, lease_end=lease_end
            ),
            atomic=not self.recorder.dialect.for_update,  # PostgreSQL: one statement
        )

    async def run_step(
        self, attempt: Attempt, point: Checkpoint, call: Callable[[], Any]
    ) -> tuple[bool, Any]:
        """Run a coroutine job's sync step in a job thread, with its checkpoint in one transaction."""
        return await self.jobs.run_step(attempt, point, call)

    async def suspend(self, attempt: Attempt, point: Checkpoint) -> bool:
        """Record a sleep or wait and let the job go, its attempt excused; False if no longer held."""
        now = timezone.now()
        return await self.recorder.run(
            lambda d: journal.suspend(d, attempt, self.worker_id, point, now), atomic=True
        )

    async def wait_event(self, attempt: Attempt, point: Checkpoint) -> tuple[str, Any]:
        """Receive a wait's event, record its timeout, or suspend the job (``journal.wait_event``)."""
        now = timezone.now()
        lease_end = now + self.request.lease
        return await self.recorder.run(
            lambda d: journal.wait_event(d, attempt, self.worker_id, point, now, lease_end), atomic=True
        )

    async def wake_suspended(self) -> list[int]:
        """Queue the suspended jobs whose sleep ended or whose wait timed out; their ids."""
        now = timezone.now()
        return await self.connector.run(lambda d: journal.wake_due(d, now))  # one statement

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
        own = 3 if self.recorder is self.connector else 4  # LISTEN, claims, ends written, the async ORM
        return await sync_to_async(preflight.problems, thread_sensitive=True)(
            self.settings, self.concurrency + own, own
        )

    async def close(self) -> None:
        """Finish pending completions, then close every connection and the job threads."""
        await self._completions.finish()
        await self._checkpoints.finish()
        await self.connector.close()
        if self.recorder is not self.connector:
            await self.recorder.close()
        # The async ORM's thread served coroutine jobs and the start-up checks.
        await sync_to_async(connections.close_all, thread_sensitive=True)()
        await self.jobs.close()


class _Batches(Generic[_T]):
    """Writes that pile up while one batch is written go in the next: one writer task at a time.

    ``write`` writes a batch of (attempt, item) and returns the ids of the jobs it wrote for
    (a job its attempt no longer held gets nothing written): each waiter learns its own.
    """

    def __init__(
        self, write: Callable[[list[tuple[Attempt, _T]]], Awaitable[Collection[int]]], name: str
    ) -> None:
        self._write = write
        self._name = name
        self._pending: list[tuple[Attempt, _T, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None

    async def add(self, attempt: Attempt, item: _T) -> bool:
        """Queue a write for the attempt's job; True once written, False if the job was no longer held."""
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((attempt, item, written))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=self._name)
        return await written  # cancelled with its job: the batch then leaves it alone

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                held = await self._write([(attempt, item) for attempt, item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - each waiter reports it
                for _, _, written in batch:
                    if not written.done():
                        written.set_exception(exc)
                continue
            for attempt, _, written in batch:
                if not written.done():
                    written.set_result(attempt.job_id in held)

    async def finish(self) -> None:
        """Wait for the writes queued so far."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


def _ping(dialect: Dialect) -> Op[None]:
    """One round trip: opens a connector's connection."""
    yield "SELECT 1", []


def _one(statement: str, params: list[Any]) -> Op[None]:
    """One statement whose rows do not matter."""
    yield statement, params


def _paused(dialect: Dialect) -> Op[frozenset[str]]:
    """The names of the paused queues."""
    rows = yield statements.paused_queues(), []
    return frozenset(row[0] for row in rows)
