"""The queue in memory: for a project's own tests, without the queue's tables.

While a ``MemoryQueue`` is in use (``aio_async.testing.in_memory()``), ``schedule()`` and its
kin put their jobs here instead of in the database, and the worker's executor runs them from
here: it is a ``protocol.Store``. The rules are the database's, kept in memory: a unique key
is held by one job at a time (returned to a second call, or replaced), a job ``after=`` others
waits until they succeed and is cancelled if one fails or is cancelled, a failure is retried by
the back-off policy until ``max_attempts``. What it leaves out, on purpose: transactions (a job
is in the queue as soon as it is scheduled, even inside a block that rolls back), leases and
rescue (nothing runs elsewhere), concurrency and rate limits (jobs run one at a time), and
groups (``schedule(group=...)`` needs the database and says so).

It holds the ``Job`` instances ``schedule()`` made, with their ids set, and changes their
fields (``status``, ``attempts``, ``result``…) as the database would; each job's failed
attempts are in ``errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.utils import timezone

from aio_async.conf import QueueSettings
from aio_async.errors import InvalidOption, StepError
from aio_async.payload import result_value
from aio_async.store import operations
from aio_async.store.protocol import Notice
from aio_async.values import Attempt, Checkpoint, ErrorInfo, Outcome

__all__ = ["MemoryQueue", "active", "using"]

_UNFINISHED = ("waiting", "queued", "running")
_FINISHED = ("succeeded", "failed", "cancelled")
_ACTIVE: contextvars.ContextVar[MemoryQueue | None] = contextvars.ContextVar("aio_async_memory", default=None)


def active() -> MemoryQueue | None:
    """The queue in memory in use here, or None: the database is the queue."""
    return _ACTIVE.get()


@contextlib.contextmanager
def using(queue: MemoryQueue) -> Iterator[MemoryQueue]:
    """Use ``queue`` instead of the database while the block runs."""
    token = _ACTIVE.set(queue)
    try:
        yield queue
    finally:
        _ACTIVE.reset(token)


@dataclasses.dataclass
class _Held:
    """A job in memory, and what the database would keep beside its row."""

    job: Any
    after: set[int] = dataclasses.field(default_factory=set)
    errors: list[ErrorInfo] = dataclasses.field(default_factory=list)


class MemoryQueue:
    """Jobs in memory: where ``schedule()`` writes, and a ``Store`` the executor runs them from."""

    def __init__(self, settings: QueueSettings, worker_id: str = "aio_async.testing") -> None:
        self.settings = settings
        self.worker_id = worker_id
        #: Make the jobs due later due before each claim (``testing.drain(with_scheduled=True)``).
        self.make_due_first = False
        self._held: dict[int, _Held] = {}
        self._ids = itertools.count(1)

    # What schedule() and its kin write ------------------------------------------------------

    @property
    def jobs(self) -> list[Any]:
        """Every job, in the order it was scheduled."""
        return [held.job for held in self._held.values()]

    def errors(self, job: Any) -> list[ErrorInfo]:
        """The failed attempts of ``job`` (a Job or its id), oldest first."""
        return list(self._held[getattr(job, "pk", job)].errors)

    def add(self, jobs: Sequence[Any], *, after: Sequence[int] = ()) -> None:
        """Put new jobs in the queue, giving each its id; ``after``: the ids they wait for."""
        missing = [pk for pk in after if pk not in self._held]
        if missing:
            raise InvalidOption(f"after=: no job {', '.join(map(str, missing))} in the queue in memory")
        for job in jobs:
            job.pk = next(self._ids)
            job._state.adding = False
            self._held[job.pk] = _Held(job, set(after))
            if after:
                job.status = "waiting"
        if after:
            self._settle([job.pk for job in jobs])

    def holder(self, key: str) -> Any | None:
        """The job that holds a unique key now, or None."""
        for held in self._held.values():
            job = held.job
            if job.unique_key == key and job.status in job.unique_states.split(","):
                return job
        return None

    def expire(self, before: datetime.datetime) -> None:
        """Free the unique keys of jobs added before ``before`` (a call's ``unique_for`` period is over)."""
        for held in self._held.values():
            if held.job.unique_key is not None and held.job.added <= before:
                held.job.unique_key = None

    def replace(self, holder: Any, job: Any, fields: Sequence[str]) -> bool:
        """Give ``holder`` (not started) ``job``'s values of ``fields``; False if it has started."""
        if holder.status not in ("queued", "waiting"):
            return False
        for field in fields:
            setattr(holder, field, getattr(job, field))
        return True

    def cancel(self, ids: Sequence[int], *, running_too: bool = True) -> list[int]:
        """Cancel the unfinished jobs among ``ids`` (and what runs after them); the ids cancelled."""
        cancelled = []
        for pk in ids:
            held = self._held.get(pk)
            if held is None or held.job.status not in _UNFINISHED:
                continue
            if held.job.status == "running" and not running_too:
                continue
            self._end(held, "cancelled")
            cancelled.append(pk)
        return cancelled

    def retry(self, ids: Sequence[int], states: Sequence[str]) -> list[int]:
        """Queue the jobs among ``ids`` that are in ``states`` to run now."""
        retried = []
        for pk in ids:
            held = self._held.get(pk)
            if held is None or held.job.status not in states:
                continue
            job = held.job
            job.status, job.run_after, job.finished = "queued", timezone.now(), None
            job.max_attempts = max(job.max_attempts, job.attempts - job.excused + 1)
            retried.append(pk)
        return retried

    def make_due(self) -> None:
        """Make the jobs due later due now (retries in their back-off, ``run_after`` ahead)."""
        now = timezone.now()
        for held in self._held.values():
            if held.job.status == "queued" and held.job.run_after > now:
                held.job.run_after = now

    def _end(self, held: _Held, status: str) -> None:
        """Finish a job: free its unique key unless its state counts, settle what waits for it."""
        job = held.job
        job.status, job.finished, job.locked_by = status, timezone.now(), ""
        if job.unique_key is not None and status not in job.unique_states.split(","):
            job.unique_key = None
        self._settle([other.job.pk for other in self._held.values() if job.pk in other.after])

    def _settle(self, waiting: Sequence[int]) -> None:
        """Queue the waiting jobs whose every prerequisite succeeded; cancel those waiting on a failure."""
        for pk in waiting:
            held = self._held[pk]
            if held.job.status != "waiting":
                continue
            statuses = {self._held[before].job.status for before in held.after}
            if statuses & {"failed", "cancelled"}:
                self._end(held, "cancelled")
            elif statuses <= {"succeeded"}:
                held.job.status = "queued"

    # The Store the executor runs them from --------------------------------------------------

    def _attempt(self, held: _Held, now: datetime.datetime) -> Attempt:
        job = held.job
        job.status, job.attempts, job.started, job.locked_by = (
            "running",
            job.attempts + 1,
            now,
            self.worker_id,
        )
        return Attempt(
            job.pk, job.attempts, job.name, list(job.args), dict(job.kwargs), queue=job.queue,
            priority=job.priority, excused=job.excused, max_attempts=job.max_attempts,
            timeout=job.timeout, isolated=job.isolated, started=now, limit_key=job.limit_key,
        )  # fmt: skip

    def _due(self, paused: frozenset[str], limited: bool) -> list[_Held]:
        if self.make_due_first:
            self.make_due()
        now = timezone.now()
        queues = () if "*" in self.settings.queues else self.settings.queues
        return sorted(
            (
                held
                for held in self._held.values()
                if held.job.status == "queued"
                and held.job.run_after <= now
                and (not queues or held.job.queue in queues)
                and held.job.queue not in paused
                and (held.job.limit_key is not None) == limited
            ),
            key=lambda held: (-held.job.priority, held.job.run_after, held.job.pk),
        )

    async def claim(
        self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset(), thorough: bool = False
    ) -> list[Attempt]:
        """Hand out up to ``limit`` due jobs, highest priority first."""
        now = timezone.now()
        return [self._attempt(held, now) for held in self._due(paused, limited=False)[:limit]]

    async def claim_limited(
        self, limit: int, *, alone: bool, paused: frozenset[str] = frozenset()
    ) -> list[Attempt]:
        """Jobs with limits, as others: in memory one job runs at a time."""
        now = timezone.now()
        return [self._attempt(held, now) for held in self._due(paused, limited=True)[:limit]]

    async def paused(self) -> frozenset[str]:
        """No queue is paused in memory."""
        return frozenset()

    async def register(self, started: datetime.datetime) -> None:
        """Nothing to record."""

    async def unregister(self) -> None:
        """Nothing to forget."""

    def _holds(self, attempt: Attempt) -> _Held | None:
        held = self._held.get(attempt.job_id)
        if held is None or held.job.status != "running" or held.job.attempts != attempt.number:
            return None
        return held

    async def heartbeat(self, attempts: Sequence[Attempt]) -> set[int]:
        """The jobs still held."""
        return {attempt.job_id for attempt in attempts if self._holds(attempt)}

    async def lost(self, attempts: Sequence[Attempt]) -> dict[int, str | None]:
        """The attempts no longer holding their jobs (cancelled meanwhile), with each job's status."""
        gone = {}
        for attempt in attempts:
            if self._holds(attempt) is None:
                held = self._held.get(attempt.job_id)
                gone[attempt.job_id] = None if held is None else held.job.status
        return gone

    async def run_sync(
        self, attempt: Attempt, call: Callable[[], Any], returned: Callable[[], None]
    ) -> tuple[Outcome, ErrorInfo | None]:
        """Run a sync job in the calling thread (no transaction: there is no database here)."""

        def work() -> Any:
            try:
                return result_value(call())
            finally:
                returned()

        try:
            value = await sync_to_async(work, thread_sensitive=True)()
        except Exception as exc:  # noqa: BLE001 - recorded as a worker records it
            error = ErrorInfo.from_exception(exc)
            return await self.fail(attempt, error), error
        return await self.complete(attempt, value), None

    async def complete(self, attempt: Attempt, result: Any) -> Outcome:
        """Mark the job succeeded with its result."""
        held = self._holds(attempt)
        if held is None:
            return Outcome.LEASE_LOST
        held.job.result = result
        self._end(held, "succeeded")
        return Outcome.SUCCEEDED

    async def fail(
        self, attempt: Attempt, error: ErrorInfo, *, final: bool = False, cause: BaseException | None = None
    ) -> Outcome:
        """Record the error, then retry by the back-off policy or, out of attempts, fail the job."""
        held = self._holds(attempt)
        if held is None:
            return Outcome.LEASE_LOST
        held.errors.append(error)
        decided = operations.verdict(attempt, self.settings, timezone.now(), final=final)
        if decided.give_up:
            self._end(held, "failed")
            return Outcome.FAILED
        held.job.status, held.job.run_after, held.job.locked_by = "queued", decided.run_after, ""
        return Outcome.RETRYING

    async def release(self, attempt: Attempt) -> bool:
        """Give the job back, its attempt excused."""
        held = self._holds(attempt)
        if held is None:
            return False
        held.job.status, held.job.excused, held.job.locked_by = "queued", held.job.excused + 1, ""
        return True

    async def snooze(self, attempt: Attempt, seconds: float) -> Outcome:
        """Back in the queue after ``seconds``, its attempt excused."""
        held = self._holds(attempt)
        if held is None:
            return Outcome.LEASE_LOST
        job = held.job
        job.status, job.excused, job.locked_by = "queued", job.excused + 1, ""
        job.run_after = timezone.now() + datetime.timedelta(seconds=seconds)
        return Outcome.SNOOZED

    async def rescue(self) -> list[int]:
        """Nothing runs elsewhere: nothing to rescue."""
        return []

    def _no_journal(self) -> StepError:
        return StepError(
            "durable steps, sleeps and waits need the job's database: test this job with "
            "aio_async.testing.drain(), not in_memory()"
        )

    async def read_steps(self, attempt: Attempt) -> dict[str, Checkpoint]:
        """Steps need the database: StepError."""
        raise self._no_journal()

    async def checkpoint(self, attempt: Attempt, point: Checkpoint) -> bool:
        """Steps need the database: StepError."""
        raise self._no_journal()

    async def run_step(
        self, attempt: Attempt, point: Checkpoint, call: Callable[[], Any]
    ) -> tuple[bool, Any]:
        """Steps need the database: StepError."""
        raise self._no_journal()

    async def suspend(self, attempt: Attempt, point: Checkpoint) -> bool:
        """Steps need the database: StepError."""
        raise self._no_journal()

    async def wait_event(self, attempt: Attempt, point: Checkpoint) -> tuple[str, Any]:
        """Steps need the database: StepError."""
        raise self._no_journal()

    async def wake_suspended(self) -> list[int]:
        """Nothing is ever suspended here."""
        return []

    def listen(self) -> AsyncIterator[Notice] | None:
        """None: the executor looks again when a job ends."""
        return None

    async def check(self) -> list[str]:
        """Nothing to check."""
        return []

    async def close(self) -> None:
        """Nothing to close."""
        await asyncio.sleep(0)
