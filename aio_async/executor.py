"""The worker: one asyncio loop that waits, claims, dispatches and keeps leases alive.

It knows nothing of SQL: every database operation is a named call on the Bridge, and the
wake-up channel comes from the database's dialect. Shutdown is a small state machine: a stop
request stops claiming; running jobs get ``shutdown_timeout`` seconds to finish; coroutine
jobs still running then are cancelled and their leases released, so they are requeued
without losing an attempt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction
from django.db import connections

from aio_async import allow, dialects
from aio_async.bridge import Bridge, Outcome
from aio_async.conf import QueueSettings, get_settings
from aio_async.models import Job

__all__ = ["Executor", "worker_id"]

logger = logging.getLogger("aio_async.executor")

#: Longest pause between retries while the database is unreachable.
MAX_BACKOFF = 30.0


def worker_id() -> str:
    """This process's worker id: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclasses.dataclass
class Executor:
    """Runs queued jobs until stopped (``run``) or until none is due (``run(until_empty=True)``)."""

    settings: QueueSettings = dataclasses.field(default_factory=get_settings)
    worker: str = dataclasses.field(default_factory=worker_id)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_jobs: int | None = None

    def __post_init__(self) -> None:
        self.outcomes: collections.Counter[Outcome] = collections.Counter()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._running: dict[int, tuple[Job, asyncio.Task[Outcome]]] = {}
        #: Jobs whose function is running: each holds one of the ``concurrency`` slots. A
        #: coroutine job gives its slot back once it returns, before its completion is written.
        self._busy: set[int] = set()
        self._ready: collections.deque[Job] = collections.deque()
        self._claimed = 0

    @property
    def concurrency(self) -> int:
        """Jobs at once in this worker."""
        return self.settings.concurrency

    def stop(self) -> None:
        """Ask the worker to stop claiming and finish (safe to call more than once)."""
        if not self._stop.is_set():
            logger.info("Stopping worker %s", self.worker, extra={"action": "stopping_worker"})
        self._stop.set()
        self._wake.set()

    async def run(self, *, until_empty: bool = False) -> collections.Counter[Outcome]:
        """Run jobs until stopped, or until no job is due when ``until_empty``; count outcomes."""
        bridge = Bridge(
            alias=self.settings.database,
            worker=self.worker,
            settings=self.settings,
            concurrency=self.concurrency,
        )
        logger.info(
            "Worker %s started on queues %s (concurrency %s)",
            self.worker,
            ",".join(self.settings.queues),
            self.concurrency,
            extra={"action": "start_worker", "worker": self.worker},
        )
        side_tasks = [
            asyncio.create_task(
                self._every(self.settings.heartbeat_every, self._heartbeat, bridge), name="heartbeat"
            ),
            asyncio.create_task(self._every(self.settings.rescue_every, self._rescue, bridge), name="rescue"),
        ]
        if not until_empty:
            side_tasks.append(asyncio.create_task(self._listen(), name="listen"))
        for side in side_tasks:
            side.add_done_callback(self._side_task_done)
        try:
            await self._loop(bridge, until_empty)
            await self._drain(bridge)
        finally:
            for side in side_tasks:
                side.cancel()
            await asyncio.gather(*side_tasks, return_exceptions=True)
            await bridge.close()
            logger.info(
                "Worker %s stopped: %s",
                self.worker,
                {outcome.value: count for outcome, count in self.outcomes.items()},
                extra={"action": "stop_worker", "worker": self.worker},
            )
        return self.outcomes

    def _side_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "Side task %s died (%r); stopping the worker rather than run half-blind",
                task.get_name(),
                task.exception(),
                extra={"action": "side_task_died", "task": task.get_name()},
            )
            self.stop()

    async def _loop(self, bridge: Bridge, until_empty: bool) -> None:
        """Claim in batches into a small buffer; finished jobs refill their slot from it.

        Up to ``concurrency`` jobs wait in the buffer beside the ``concurrency`` running ones,
        so one claim serves many jobs and a slot never waits for a round trip. Buffered jobs
        are leased like running ones (heartbeat, release on stop, rescue if the worker dies).
        """
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            self._fill_slots(bridge)
            want = 2 * self.concurrency - len(self._busy) - len(self._ready)
            if self.max_jobs is not None:
                want = min(want, self.max_jobs - self._claimed)
            jobs: list[Job] = []
            if want > 0 and len(self._ready) <= self.concurrency // 2:
                try:
                    jobs = await bridge.claim(want, self.include, self.exclude)
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - the database may come back
                    failures += 1
                    delay = min(MAX_BACKOFF, self.settings.poll_interval * 2 ** min(failures, 6))
                    logger.warning(
                        "Cannot claim jobs (%s: %s); retrying in %.1f s",
                        type(exc).__name__,
                        exc,
                        delay,
                        extra={"action": "claim_failed", "worker": self.worker},
                    )
                    await self._sleep(delay)
                    continue
                self._claimed += len(jobs)
                self._ready.extend(jobs)
                self._fill_slots(bridge)
            idle = not self._running and not self._ready
            if idle and self.max_jobs is not None and self._claimed >= self.max_jobs:
                return
            # A job that finished while the claim was in flight may have queued more work
            # (a retry due now, a group's final job): then the wake-up is set; claim again.
            if idle and until_empty and not jobs and not self._wake.is_set():
                return
            if jobs and len(jobs) == want:
                continue  # a full batch: there may be more due jobs to claim right away
            # With jobs in hand, the next event is a job finishing; otherwise poll.
            await self._sleep(None if self._running or self._ready else self.settings.poll_interval)

    async def _sleep(self, timeout: float | None) -> None:  # noqa: ASYNC109 - waits on an event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _fill_slots(self, bridge: Bridge) -> None:
        while self._ready and len(self._busy) < self.concurrency and not self._stop.is_set():
            self._start(bridge, self._ready.popleft())

    def _start(self, bridge: Bridge, job: Job) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "Job %s (%s) started, attempt %s",
                job.pk,
                job.name,
                job.attempts,
                extra={"action": "job_started", "job_id": job.pk, "worker": self.worker},
            )
        task = asyncio.create_task(bridge.run(job, lambda: self._ran(bridge, job)), name=f"job-{job.pk}")
        self._running[job.pk] = (job, task)
        self._busy.add(job.pk)
        task.add_done_callback(lambda done: self._finished(bridge, job, done))

    def _ran(self, bridge: Bridge, job: Job) -> None:
        self._busy.discard(job.pk)
        self._fill_slots(bridge)

    def _finished(self, bridge: Bridge, job: Job, task: asyncio.Task[Outcome]) -> None:
        self._running.pop(job.pk, None)
        self._ran(bridge, job)
        self._wake.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # The attempt could not be recorded (the database is away); the lease will expire
            # and the job will be rescued.
            logger.error(
                "Job %s could not be recorded: %r",
                job.pk,
                exc,
                extra={"action": "job_unrecorded", "job_id": job.pk},
            )
            return
        self.outcomes[task.result()] += 1

    async def _drain(self, bridge: Bridge) -> None:
        while self._ready:  # claimed but not started: back to the queue, attempt unused
            await self._release(bridge, self._ready.popleft())
        if not self._running:
            return
        logger.info(
            "Waiting up to %s s for %s running job(s)",
            self.settings.shutdown_timeout,
            len(self._running),
            extra={"action": "draining", "worker": self.worker},
        )
        tasks = [task for _, task in self._running.values()]
        _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout)
        for job, task in list(self._running.values()):
            if task in pending and iscoroutinefunction(allow.resolve(job.name)):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await self._release(bridge, job)
        # Sync jobs cannot be interrupted; wait for them (their thread holds the job's transaction).
        remaining = [task for _, task in self._running.values()]
        if remaining:
            await asyncio.wait(remaining)

    async def _release(self, bridge: Bridge, job: Job) -> None:
        if await bridge.release(job):
            self.outcomes[Outcome.RELEASED] += 1
            logger.info(
                "Job %s released back to the queue",
                job.pk,
                extra={"action": "job_released", "job_id": job.pk},
            )

    async def _every(
        self, seconds: float, action: Callable[[Bridge], Awaitable[None]], bridge: Bridge
    ) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)
                return
            try:
                await action(bridge)
            except Exception as exc:  # noqa: BLE001 - transient database trouble
                logger.warning(
                    "%s failed: %s: %s",
                    action.__name__.strip("_"),
                    type(exc).__name__,
                    exc,
                    extra={"action": f"{action.__name__.strip('_')}_failed"},
                )

    async def _heartbeat(self, bridge: Bridge) -> None:
        await bridge.heartbeat([*self._running, *(job.pk for job in self._ready)])

    async def _rescue(self, bridge: Bridge) -> None:
        rescued = await bridge.rescue()
        if rescued:
            logger.warning(
                "Rescued %s job(s) whose worker was lost: %s",
                len(rescued),
                rescued,
                extra={"action": "jobs_rescued", "job_ids": rescued},
            )
            self._wake.set()

    async def _listen(self) -> None:
        connection = connections[self.settings.database]
        dialect = dialects.for_connection(connection)
        if not dialect.can_notify:
            return
        failures = 0
        while not self._stop.is_set():
            try:
                async for queue in dialect.listen(connection):
                    failures = 0
                    if not queue or queue in self.settings.queues:
                        self._wake.set()
            except Exception as exc:  # noqa: BLE001 - reconnect after a database restart
                failures += 1
                delay = min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 6))
                logger.warning(
                    "Lost the LISTEN connection (%s: %s); reconnecting in %.1f s",
                    type(exc).__name__,
                    exc,
                    delay,
                    extra={"action": "listen_failed"},
                )
                await self._sleep_unless_stopped(delay)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
