"""The store's interface, as the worker sees it: the seam a fake store also fills.

``Store`` is every queue operation a worker needs; ``Connector`` is how a store runs the
statement sequences of ``store.operations`` on one connection (Django's, or the worker's own
asyncio PostgreSQL connection). ``JobRunner`` runs a sync job's attempt in a job thread.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

from aio_async.store.dialects import Dialect
from aio_async.store.statements import MakeOp
from aio_async.values import Attempt, Checkpoint, ErrorInfo, Outcome

__all__ = ["CANCELLED", "QUEUES", "WAKE", "Connector", "JobRunner", "Notice", "Store"]

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

    async def claim(
        self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset(), thorough: bool = False
    ) -> list[Attempt]:
        """Lease up to ``limit`` due jobs to this worker (an isolated one only when ``alone``).

        Jobs of the ``paused`` queues stay queued. A store may claim past where its last claims
        reached (``store.frontier``); ``thorough`` asks it to look at the whole queue, so that
        finding nothing means nothing is due.
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

    async def read_steps(self, attempt: Attempt) -> dict[str, Checkpoint]:
        """The journal of the attempt's job (``aio_async.steps``), by name."""

    async def checkpoint(self, attempt: Attempt, point: Checkpoint) -> bool:
        """Record a checkpoint under the job's fence; False, nothing written, if no longer held."""

    async def run_step(
        self, attempt: Attempt, point: Checkpoint, call: Callable[[], Any]
    ) -> tuple[bool, Any]:
        """Run a coroutine job's sync step and commit its checkpoint with its writes; (held, result)."""

    async def suspend(self, attempt: Attempt, point: Checkpoint) -> bool:
        """Record a durable sleep or wait and let the job go; False if no longer held."""

    async def wait_event(self, attempt: Attempt, point: Checkpoint) -> tuple[str, Any]:
        """Receive a wait's event, record its timeout, or suspend the job: (state, payload)."""

    async def wake_suspended(self) -> list[int]:
        """Queue the suspended jobs whose sleep ended or whose wait timed out; their ids."""

    def listen(self) -> AsyncIterator[Notice] | None:
        """Notices as jobs become due or are cancelled (PostgreSQL's NOTIFY), or None: poll instead."""

    async def check(self) -> list[str]:
        """Problems to warn about before the first claim; raises when the worker cannot start."""

    async def close(self) -> None:
        """Finish pending writes and close every connection."""


class Connector(Protocol):
    """How a store runs the statement sequences of ``operations`` on a connection."""

    dialect: Dialect

    async def run(self, make: MakeOp[R], *, atomic: bool = False, retry: bool = False) -> R:
        """Run the operation ``make(dialect)``, in one transaction when ``atomic``."""

    def listen(self) -> AsyncIterator[Notice] | None:
        """Notices as jobs become due or are cancelled, or None when the connection cannot listen."""

    async def close(self) -> None:
        """Close the connection."""


class JobRunner(Protocol):
    """Runs sync jobs' attempts, each with its completion in one transaction, in job threads."""

    async def run(
        self, attempt: Attempt, call: Callable[[], Any], returned: Callable[[], None]
    ) -> tuple[Outcome, ErrorInfo | None]:
        """Run ``call`` and the attempt's completion in one transaction; record a failure after."""

    async def run_step(
        self, attempt: Attempt, point: Checkpoint, call: Callable[[], Any]
    ) -> tuple[bool, Any]:
        """Run a coroutine job's sync step and its checkpoint in one transaction, in a job thread."""

    async def close(self) -> None:
        """Close each job thread's connection, then the threads."""
