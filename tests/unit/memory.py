"""An in-memory Store: the executor's state machine, tested without a database."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aio_async.bridge import NoConnection
from aio_async.errors import StepError
from aio_async.payload import result_value
from aio_async.values import Attempt, Checkpoint, ErrorInfo, Outcome


@dataclasses.dataclass
class MemoryJob:
    """A job in the fake queue."""

    job_id: int
    name: str
    args: list[Any] = dataclasses.field(default_factory=list)
    timeout: float | None = None
    isolated: bool = False
    max_attempts: int = 3
    status: str = "queued"
    attempts: int = 0
    excused: int = 0
    result: Any = None
    errors: list[ErrorInfo] = dataclasses.field(default_factory=list)


class MemoryStore:
    """Implements ``aio_async.store.protocol.Store`` over a list of jobs, and records what it was asked."""

    def __init__(self, jobs: Sequence[MemoryJob], *, concurrency: int) -> None:
        self.jobs = {job.job_id: job for job in jobs}
        self.concurrency = concurrency
        self.events: list[tuple[Any, ...]] = []
        #: Attempts handed out whose function has not returned yet.
        self.held: set[tuple[int, int]] = set()
        self.claim_errors: list[Exception] = []
        #: Errors ``paused()`` raises, one a call: the database does not answer the worker's probe.
        self.paused_errors: list[Exception] = []
        self.complete_errors: list[Exception] = []
        self.no_connection_for: set[int] = set()
        self.lost_leases: set[int] = set()
        self.wakeups: asyncio.Queue[str] | None = None
        self.closed = False

    def _holds(self, attempt: Attempt) -> bool:
        job = self.jobs[attempt.job_id]
        return (
            job.status == "running"
            and job.attempts == attempt.number
            and attempt.job_id not in self.lost_leases
        )

    def returned(self, job_id: int) -> None:
        """A job's function returned (the test's functions say so, as the worker frees a slot)."""
        self.held = {held for held in self.held if held[0] != job_id}

    async def claim(
        self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset(), thorough: bool = False
    ) -> list[Attempt]:
        """Hand out up to ``limit`` queued jobs; an isolated one only when ``alone``, and then alone."""
        if self.claim_errors:
            self.events.append(("claim_failed", limit))
            raise self.claim_errors.pop(0)
        assert limit + len(self.held) <= self.concurrency, (limit, self.held)
        picked = [job for job in self.jobs.values() if job.status == "queued" and (alone or not job.isolated)]
        picked = picked[:limit]
        isolated = [job for job in picked if job.isolated]
        if isolated:
            picked = isolated[:1]
        attempts = []
        for job in picked:
            job.status, job.attempts = "running", job.attempts + 1
            attempt = Attempt(
                job.job_id, job.attempts, job.name, list(job.args), {}, timeout=job.timeout,
                isolated=job.isolated, max_attempts=job.max_attempts, excused=job.excused,
            )  # fmt: skip
            self.held.add((job.job_id, job.attempts))
            attempts.append(attempt)
        self.events.append(("claim", limit, alone, [a.job_id for a in attempts]))
        return attempts

    async def heartbeat(self, attempts: Sequence[Attempt]) -> set[int]:
        """The ids still held."""
        return {attempt.job_id for attempt in attempts if self._holds(attempt)}

    async def run_sync(
        self, attempt: Attempt, call: Callable[[], Any], returned: Callable[[], None]
    ) -> tuple[Outcome, ErrorInfo | None]:
        """Run ``call`` in a thread, then complete or fail it."""
        if attempt.job_id in self.no_connection_for:
            self.no_connection_for.discard(attempt.job_id)
            self.held.discard((attempt.job_id, attempt.number))
            raise NoConnection("too many clients already")

        def work() -> Any:
            try:
                return result_value(call())
            finally:
                self.returned(attempt.job_id)
                returned()

        try:
            value = await asyncio.to_thread(work)
        except Exception as exc:
            error = ErrorInfo.from_exception(exc)
            return await self.fail(attempt, error), error
        return await self.complete(attempt, value), None

    async def complete(self, attempt: Attempt, result: Any) -> Outcome:
        """Mark the job succeeded if the attempt holds it."""
        self.events.append(("complete", attempt.job_id, result))
        if self.complete_errors:
            raise self.complete_errors.pop(0)
        if not self._holds(attempt):
            return Outcome.LEASE_LOST
        job = self.jobs[attempt.job_id]
        job.status, job.result = "succeeded", result
        return Outcome.SUCCEEDED

    async def fail(
        self, attempt: Attempt, error: ErrorInfo, *, final: bool = False, cause: BaseException | None = None
    ) -> Outcome:
        """Record the error; retry or give up."""
        self.held.discard((attempt.job_id, attempt.number))
        self.events.append(("fail", attempt.job_id, error.exception, final))
        if not self._holds(attempt):
            return Outcome.LEASE_LOST
        job = self.jobs[attempt.job_id]
        job.errors.append(error)
        if final or attempt.charged >= job.max_attempts:
            job.status = "failed"
            return Outcome.FAILED
        job.status = "retry-later"
        return Outcome.RETRYING

    async def release(self, attempt: Attempt) -> bool:
        """Requeue with the attempt excused."""
        self.held.discard((attempt.job_id, attempt.number))
        self.events.append(("release", attempt.job_id))
        if not self._holds(attempt):
            return False
        job = self.jobs[attempt.job_id]
        job.status, job.excused = "queued", job.excused + 1
        return True

    async def snooze(self, attempt: Attempt, seconds: float) -> Outcome:
        """Requeue for later with the attempt excused."""
        self.held.discard((attempt.job_id, attempt.number))
        self.events.append(("snooze", attempt.job_id))
        if not self._holds(attempt):
            return Outcome.LEASE_LOST
        job = self.jobs[attempt.job_id]
        job.status, job.excused = "snoozed", job.excused + 1
        return Outcome.SNOOZED

    async def wake_suspended(self) -> list[int]:
        """Nothing is suspended here."""
        return []

    async def read_steps(self, attempt: Attempt) -> dict[str, Checkpoint]:
        """No journal: the executor's unit tests run no job with steps (tests/integration do)."""
        raise StepError("this fake store keeps no journal: durable steps are tested on a database")

    async def checkpoint(self, attempt: Attempt, point: Checkpoint) -> bool:
        """No journal: the executor's unit tests run no job with steps (tests/integration do)."""
        raise StepError("this fake store keeps no journal: durable steps are tested on a database")

    async def run_step(
        self, attempt: Attempt, point: Checkpoint, call: Callable[[], Any]
    ) -> tuple[bool, Any]:
        """No journal: the executor's unit tests run no job with steps (tests/integration do)."""
        raise StepError("this fake store keeps no journal: durable steps are tested on a database")

    async def suspend(self, attempt: Attempt, point: Checkpoint) -> bool:
        """No journal: the executor's unit tests run no job with steps (tests/integration do)."""
        raise StepError("this fake store keeps no journal: durable steps are tested on a database")

    async def wait_event(self, attempt: Attempt, point: Checkpoint) -> tuple[str, Any]:
        """No journal: the executor's unit tests run no job with steps (tests/integration do)."""
        raise StepError("this fake store keeps no journal: durable steps are tested on a database")

    async def rescue(self) -> list[int]:
        """Nothing to rescue in memory."""
        self.events.append(("rescue",))
        return []

    def listen(self) -> AsyncIterator[tuple[str, str]] | None:
        """Wake-ups put in ``self.wakeups``, when there is one."""
        if self.wakeups is None:
            return None
        return self._wakeups(self.wakeups)

    async def _wakeups(self, queue: asyncio.Queue[str]) -> AsyncIterator[tuple[str, str]]:
        yield "wake", ""
        while True:
            yield "wake", await queue.get()

    async def claim_limited(
        self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset()
    ) -> list[Attempt]:
        """No job in memory has limits."""
        return []

    async def paused(self) -> frozenset[str]:
        """No queue is paused in memory (or an error of ``paused_errors``)."""
        if self.paused_errors:
            self.events.append(("paused_failed",))
            raise self.paused_errors.pop(0)
        self.events.append(("paused",))
        return frozenset()

    async def register(self, started: Any) -> None:
        """Nothing to record."""

    async def unregister(self) -> None:
        """Nothing to forget."""

    async def lost(self, attempts: Sequence[Attempt]) -> dict[int, str | None]:
        """The attempts that no longer hold their jobs, with the jobs' statuses."""
        return {a.job_id: self.jobs[a.job_id].status for a in attempts if not self._holds(a)}

    async def check(self) -> list[str]:
        """No problems."""
        return []

    async def close(self) -> None:
        """Remember that it was closed."""
        self.closed = True

    def statuses(self) -> dict[int, str]:
        """Each job's status, by id."""
        return {job_id: job.status for job_id, job in self.jobs.items()}
