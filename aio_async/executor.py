"""The worker: one asyncio loop that waits, claims, runs and keeps leases alive.

It knows nothing of SQL or of database dialects: every database operation is a call on the
``Store``. A worker claims only for its free slots, so it never holds a job it cannot start
while another worker could: a slot is free once its job's function has returned (the
completion may still be committing), and a claim takes every free slot in one statement.

One attempt runs in ``worker.attempt`` (the attempt runner): a coroutine job is awaited on
the loop (cancelled at its timeout); a sync job runs in a job thread with its completion in
the same transaction (``bridge``); a sync job past its timeout is failed at once and its late
commit refused. Pruning and periodic ticks run beside the loop (``worker.maintenance``).

Shutdown is a small state machine: a stop request stops claiming; running jobs get
``shutdown_timeout`` seconds to finish; coroutine jobs still running then are cancelled and
released, their attempt excused; sync jobs, which cannot be interrupted, are waited for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.utils import timezone

from aio_async.bridge import NoConnection
from aio_async.conf import QueueSettings, get_settings
from aio_async.context import JobContext
from aio_async.cron import schedules as periodic_schedules
from aio_async.log import job_event, job_finished
from aio_async.schedules import Schedule
from aio_async.startup import warn_unserved_queues
from aio_async.store.protocol import CANCELLED, QUEUES, Store
from aio_async.values import Attempt, Outcome, WorkerId
from aio_async.worker.attempt import run_attempt
from aio_async.worker.maintenance import fire_periodic, prune_every
from aio_async.worker.threads import open_store

__all__ = ["Executor", "new_worker_id"]

logger = logging.getLogger("aio_async.executor")

#: Longest pause between retries of a claim (or of the LISTEN connection) that keeps failing.
MAX_BACKOFF = 30.0
#: While the database does not answer, a backing-off worker asks it this often (a cheap read)
#: and claims again as soon as it does: a database that comes back is used within this long.
PROBE_EVERY = 0.5


def _counts(counted: dict[str, int]) -> str:
    """``3 succeeded, 1 failed``: outcome counts as words."""
    return ", ".join(f"{count} {outcome}" for outcome, count in counted.items())


def new_worker_id() -> str:
    """A worker id for this process, ``host:pid:token`` (``values.WorkerId``)."""
    return str(WorkerId.new())


#: Without LISTEN, a worker running jobs asks this often whether any was cancelled.
CANCEL_CHECK = 1.0
#: After a wake-up whose claim found nothing, look again this long after: the job it was woken
#: for may have been locked by another transaction at that moment (``SKIP LOCKED`` passed it).
RELOOK = (0.05, 0.25, 1.0)


#: Pick-up delays kept for a summary's median: a uniform sample of the period's, at most this many.
PICKUP_SAMPLE = 4096


class _Pickups:
    """How long after they were due a period's jobs were claimed: count, longest, a sample for the median.

    Counted once per claim, not per job (a claim's jobs share its start): at thousands of
    jobs a second, a per-job cost shows in the worker's rate. The sample keeps every
    ``stride``-th job, halved (and the stride doubled) each time it fills up: evenly spread
    over the period, as a uniform sample would be, without a random draw per job.
    """

    def __init__(self) -> None:
        self.count = 0
        self.longest = 0.0
        self.sample: list[float] = []
        self.stride = 1

    def claimed(self, attempts: list[Attempt]) -> None:
        """Count the jobs of one claim (all started at once), each claimed some time after it was due."""
        if not attempts or attempts[0].started is None:
            return
        started = attempts[0].started
        dues = [attempt.due for attempt in attempts if attempt.due is not None]
        if not dues:
            return
        longest = (started - min(dues)).total_seconds()
        if longest > self.longest:
            self.longest = longest
        for due in dues:
            self.count += 1
            if self.count % self.stride == 0:
                self.sample.append(max(0.0, (started - due).total_seconds()))
                if len(self.sample) >= PICKUP_SAMPLE:
                    self.sample, self.stride = self.sample[1::2], self.stride * 2

    def median(self) -> float | None:
        """The sample's median, or None when no job was claimed."""
        return statistics.median(self.sample) if self.sample else None


@dataclasses.dataclass(frozen=True)
class _Complaint:
    """How a back-off names what failed (with the exception's type and text) and what it retries."""

    message: str
    retry: str
    action: str


_CLAIM_FAILED = _Complaint("Cannot claim jobs (%s: %s)", "retrying", "claim_failed")
_LISTEN_FAILED = _Complaint("Lost the LISTEN connection (%s: %s)", "reconnecting", "listen_failed")


@dataclasses.dataclass
class _Running:
    attempt: Attempt
    task: asyncio.Task[Outcome]
    context: JobContext
    coroutine: bool = False


@dataclasses.dataclass
class Executor:
    """Runs queued jobs until stopped (``run``) or until none is due (``run(until_empty=True)``)."""

    settings: QueueSettings = dataclasses.field(default_factory=get_settings)
    worker_id: str = dataclasses.field(default_factory=new_worker_id)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_jobs: int | None = None
    #: The store to use; by default the one for the queue's database.
    store: Store | None = None
    #: The periodic schedules to fire; by default every schedule declared or configured.
    schedules: list[Schedule] | None = None
    #: Log the worker's start and stop, and warn of tasks on queues it does not serve.
    announce: bool = True

    def __post_init__(self) -> None:
        self.outcomes: collections.Counter[Outcome] = collections.Counter()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._running: dict[int, _Running] = {}
        #: Jobs whose function is running, with their attempt number: each holds a slot.
        self._busy: dict[int, int] = {}
        #: An isolated job runs: nothing else is claimed until it has finished.
        self._isolating = False
        #: Slots this worker may fill: the concurrency, lowered while connections are short.
        self.capacity = self.settings.concurrency
        self._claimed = 0
        #: Attempts whose end could not be written (the database was away): given back later.
        self._unrecorded: list[Attempt] = []
        #: When to look for due jobs with limits next (their keys may have room by then): a
        #: wake-up or the end of a limited job here makes it now.
        self._limited_at = 0.0
        #: The paused queues (left alone by the claims), and when to read them again.
        self._paused: frozenset[str] = frozenset()
        self._paused_at = 0.0
        self._started = timezone.now()
        #: Jobs stopped while they ran here, cancelled or their lease lost: the attempt number
        #: and that outcome (a stopped coroutine job ends with it, not as failed or released).
        self._stopped: dict[int, tuple[int, Outcome]] = {}
        self._checks: set[asyncio.Task[None]] = set()
        #: A NOTIFY said a job became due on a served queue since the last claim.
        self._notified = False
        #: Looks taken again since a wake-up whose claim found nothing (see ``RELOOK``).
        self._relooks = len(RELOOK)
        #: Attempts ended since the last summary (``_log_summary``), by queue and outcome.
        self._period: collections.Counter[tuple[str, str]] = collections.Counter()
        self._period_began = time.monotonic()
        self._pickups = _Pickups()
        #: Set when the database is seen to answer again (then replaced): it ends the back-offs
        #: that wait for it (``_back_off``).
        self._answered = asyncio.Event()

    @property
    def concurrency(self) -> int:
        """Jobs at once in this worker."""
        return self.settings.concurrency

    def stop(self) -> None:
        """Ask the worker to stop claiming and finish (safe to call more than once)."""
        if not self._stop.is_set():
            logger.info("Stopping worker %s", self.worker_id, extra={"action": "stopping_worker"})
        self._stop.set()
        self._wake.set()

    async def run(self, *, until_empty: bool = False) -> collections.Counter[Outcome]:
        """Run jobs until stopped, or until no job is due when ``until_empty``; count outcomes."""
        if self.schedules is None:
            self.schedules = periodic_schedules(check_tasks=True)
        store = self.store or open_store(
            self.settings, self.worker_id, include=self.include, exclude=self.exclude
        )
        try:
            for problem in await store.check():
                logger.warning("%s", problem, extra={"action": "worker_check"})
            if self.announce:
                warn_unserved_queues(self.settings)
            try:
                await store.register(self._started)
            except Exception as exc:  # noqa: BLE001 - the database may be away: the claims wait for it
                logger.warning("Cannot record this worker yet (%s)", exc, extra={"action": "register_failed"})
            logger.log(
                logging.INFO if self.announce else logging.DEBUG,
                "Worker %s started on queues %s (concurrency %s)",
                self.worker_id,
                ",".join(self.settings.queues),
                self.concurrency,
                extra={"action": "start_worker", "worker_id": self.worker_id},
            )
            side_tasks = [
                asyncio.create_task(
                    self._every(self.settings.heartbeat_every, self._heartbeat, store), name="heartbeat"
                ),
                asyncio.create_task(
                    self._every(self.settings.rescue_every, self._rescue, store), name="rescue"
                ),
                asyncio.create_task(
                    self._every(self.settings.poll_interval, self._wake_suspended, store), name="wake"
                ),
            ]
            if until_empty or store.listen() is None:
                side_tasks.append(
                    asyncio.create_task(
                        self._every(CANCEL_CHECK, self._look_for_cancelled, store), name="cancel-check"
                    )
                )
            else:
                side_tasks.append(asyncio.create_task(self._listen(store), name="listen"))
            if self.announce and self.settings.log_summary_interval > 0:
                side_tasks.append(
                    asyncio.create_task(
                        self._every(self.settings.log_summary_interval, self._log_summary, store),
                        name="summary",
                    )
                )
            if not until_empty and self.settings.retention is not None:
                side_tasks.append(
                    asyncio.create_task(
                        prune_every(self.settings.retention, self.settings.database, self._stop), name="prune"
                    )
                )
            if not until_empty and self.schedules:
                side_tasks.append(
                    asyncio.create_task(
                        fire_periodic(self.schedules, self.settings.database, self._stop, self._wake.set),
                        name="periodic",
                    )
                )
            for side in side_tasks:
                side.add_done_callback(self._side_task_done)
            try:
                await self._loop(store, until_empty)
                await self._drain(store)
            finally:
                for side in side_tasks:
                    side.cancel()
                await asyncio.gather(*side_tasks, return_exceptions=True)
                with contextlib.suppress(Exception):  # a stale row is forgotten a day later
                    await store.unregister()
        finally:
            await store.close()
        counted = dict(sorted((outcome.value, count) for outcome, count in self.outcomes.items()))
        logger.log(
            logging.INFO if self.announce else logging.DEBUG,
            "Worker %s stopped: %s",
            self.worker_id,
            _counts(counted) or "no job run",
            extra={"action": "stop_worker", "worker_id": self.worker_id, "outcomes": counted},
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

    # Claiming ---------------------------------------------------------------------------

    async def _loop(self, store: Store, until_empty: bool) -> None:
        """Claim for the free slots whenever one frees up, a job is due, or the poll says so."""
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            notified, self._notified = self._notified, False
            free = self.capacity - len(self._busy)
            if self.max_jobs is not None:
                free = min(free, self.max_jobs - self._claimed)
            attempts: list[Attempt] = []
            if free > 0 and not self._isolating:
                if time.monotonic() >= self._paused_at:
                    await self._read_paused(store)
                try:
                    attempts = await store.claim(
                        free, alone=not self._busy, paused=self._paused, thorough=until_empty
                    )
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - the database may come back
                    failures += 1
                    await self._back_off(store, exc, failures, self.settings.poll_interval, _CLAIM_FAILED)
                    continue
                self._claimed += len(attempts)
                self._pickups.claimed(attempts)
                for attempt in attempts:
                    self._start(store, attempt)
                left = free - len(attempts)
                if left > 0 and not self._isolating and (until_empty or time.monotonic() >= self._limited_at):
                    limited = await self._claim_limited(store, left)
                    self._claimed += len(limited)
                    self._pickups.claimed(limited)
                    for attempt in limited:
                        self._start(store, attempt)
                    attempts += limited
            idle = not self._running and not self._busy
            if idle and self.max_jobs is not None and self._claimed >= self.max_jobs:
                return
            # A job that finished while the claim was in flight may have queued more work
            # (a retry due now, a group's final job): then the wake-up is set; claim again.
            if idle and until_empty and not attempts and not self._wake.is_set():
                # Before calling the queue empty: jobs whose durable sleep has ended are due too.
                if not await store.wake_suspended():
                    return
                continue
            if attempts and len(attempts) == free:
                continue  # every free slot filled: more may be due as soon as one frees up
            await self._sleep(self._next_look(notified, found=bool(attempts), free=free))

    def _next_look(self, notified: bool, *, found: bool, free: int) -> float:
        """Seconds until the next claim unless woken: the poll interval, or sooner after a vain wake-up.

        A wake-up whose claim found nothing may have met the job's row locked by another
        transaction (one scheduling a job after it, say): the claim passed it by, and the
        worker looks again shortly, a few times, before it falls back to polling.
        """
        if notified and free > 0:
            self._relooks = 0 if not found else len(RELOOK)
        elif found:
            self._relooks = len(RELOOK)
        if self._relooks >= len(RELOOK):
            return self.settings.poll_interval
        delay = RELOOK[self._relooks]
        self._relooks += 1
        return min(delay, self.settings.poll_interval)

    async def _claim_limited(self, store: Store, free: int) -> list[Attempt]:
        """Claim due jobs with limits for ``free`` slots; if none has room, not again for a poll interval."""
        try:
            limited = await store.claim_limited(free, alone=not self._busy, paused=self._paused)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            limited = []
            logger.warning(
                "Cannot claim jobs with limits (%s: %s)",
                type(exc).__name__,
                exc,
                extra={"action": "claim_failed", "worker_id": self.worker_id},
            )
        self._limited_at = 0.0 if limited else time.monotonic() + self.settings.poll_interval
        return limited

    async def _read_paused(self, store: Store) -> bool:
        """Read which queues are paused (again after a poll interval, or when told of a change).

        Returns whether the database answered: the read is also the worker's cheapest probe.
        """
        try:
            paused = await store.paused()
        except Exception:  # noqa: BLE001 - the claim reports the database's trouble
            return False
        if paused != self._paused:
            logger.info(
                "Paused queues: %s",
                ", ".join(sorted(paused)) or "none",
                extra={"action": "paused_queues", "queues": sorted(paused), "worker_id": self.worker_id},
            )
        self._paused = paused
        self._paused_at = time.monotonic() + self.settings.poll_interval
        return True

    async def _back_off(
        self, store: Store, exc: Exception, failures: int, base: float, say: _Complaint
    ) -> None:
        """Wait after the ``failures``-th failure in a row: until the database is back, or a growing delay.

        The database is asked at once (``_read_paused``). If it does not answer, it is asked
        again every ``PROBE_EVERY`` seconds, and the wait ends as soon as it answers or the
        LISTEN connection is back (``_database_answered``): a restarted database is used
        within a second, however long the back-off had grown. If it answers, the failure is
        the statement's own (a broken query, a lock) or a lost connection already replaced:
        the first is retried after ``PROBE_EVERY``, the next ones back off up to
        ``MAX_BACKOFF``, so that a query that keeps failing does not spin.
        """
        delay = min(MAX_BACKOFF, base * 2 ** min(failures, 6))
        answered = self._answered  # set once the database is seen to answer again
        down = not await self._read_paused(store)
        if not down and failures == 1:
            delay = min(delay, PROBE_EVERY)
        if down:
            message = say.message + "; the database does not answer: %s as soon as it does, in %.1f s at most"
        else:
            message = say.message + "; %s in %.1f s"
        logger.warning(
            message,
            type(exc).__name__,
            " ".join(str(exc).split()),  # one line, whatever the driver's message spans
            say.retry,
            delay,
            extra={"action": say.action, "worker_id": self.worker_id, "delay": delay, "reachable": not down},
        )
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
            waits = {asyncio.ensure_future(self._stop.wait())}
            if down:
                waits.add(asyncio.ensure_future(answered.wait()))
            try:
                await asyncio.wait(waits, timeout=min(PROBE_EVERY, left), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            if self._stop.is_set() or time.monotonic() >= deadline:
                return
            if down and not answered.is_set() and await self._read_paused(store):
                logger.info("The database answers again", extra={"action": "database_back"})
                self._database_answered()
            if down and answered.is_set():
                return
            if not down:
                down = not await self._read_paused(store)

    def _database_answered(self) -> None:
        """Wake every back-off waiting for the database: it answers again."""
        self._answered.set()
        self._answered = asyncio.Event()  # the next back-off waits for the next time

    async def _sleep(self, timeout: float | None) -> None:  # noqa: ASYNC109 - waits on an event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` whatever wakes the worker, unless it is stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _start(self, store: Store, attempt: Attempt) -> None:
        job = attempt.context(self.worker_id)
        task = asyncio.create_task(run_attempt(store, attempt, job, self), name=f"job-{attempt.job_id}")
        self._running[attempt.job_id] = _Running(attempt, task, job)
        self._busy[attempt.job_id] = attempt.number
        if attempt.isolated:
            self._isolating = True
        task.add_done_callback(functools.partial(self._finished, attempt))

    # What a running attempt tells the worker (``worker.attempt.Slots``) ---------------------

    def free(self, attempt: Attempt) -> None:
        """The job's function returned (its completion may still be committing): its slot is free."""
        if self._busy.get(attempt.job_id) == attempt.number:
            del self._busy[attempt.job_id]
            self._wake.set()

    def wake(self) -> None:
        """Claim again now."""
        self._wake.set()

    def running_coroutine(self, attempt: Attempt) -> None:
        """The attempt runs a coroutine: a cancel or a lost lease cancels its task."""
        if (running := self._running.get(attempt.job_id)) is not None and running.attempt is attempt:
            running.coroutine = True

    def stopped_as(self, attempt: Attempt) -> Outcome | None:
        """The end the attempt takes because it was stopped here, or None if it was not."""
        stopped = self._stopped.get(attempt.job_id)
        return stopped[1] if stopped is not None and stopped[0] == attempt.number else None

    def stop_as(self, attempt: Attempt, outcome: Outcome) -> None:
        """The attempt is stopped here and ends as ``outcome``."""
        self._stopped[attempt.job_id] = (attempt.number, outcome)

    def connections_short(self, exc: NoConnection) -> None:
        """A job thread could not connect: run fewer jobs at once, as many as run now (at least one)."""
        first = self.capacity == self.concurrency
        self.capacity = max(1, len(self._busy))
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "A job thread cannot connect to the database (%s); running fewer jobs at once (%s now, "
            "concurrency %s) until connections free up; jobs that could not start lose no attempt",
            exc,
            self.capacity,
            self.concurrency,
            extra={"action": "connections_short", "worker_id": self.worker_id},
        )

    def _finished(self, attempt: Attempt, task: asyncio.Task[Outcome]) -> None:
        # The job may run again here already (a snooze of 0 s, a retry due now, claimed before
        # this callback ran): only this attempt's entry goes.
        if (running := self._running.get(attempt.job_id)) is not None and running.attempt is attempt:
            del self._running[attempt.job_id]
        if attempt.limit_key is not None:
            self._limited_at = 0.0  # its key may have room for another job now
        if (stopped := self._stopped.get(attempt.job_id)) is not None and stopped[0] == attempt.number:
            del self._stopped[attempt.job_id]
        if attempt.isolated:
            self._isolating = False
        self._wake.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # The attempt's end could not be written (the database is away). Its work rolled
            # back with it (a sync job) or is done (a coroutine job); either way the job is
            # given back to the queue, its attempt excused, once the database answers again.
            job_event(
                logging.ERROR,
                "job_unrecorded",
                attempt,
                self.worker_id,
                "could not be recorded (%r); it will be given back to the queue",
                exc,
            )
            self._unrecorded.append(attempt)
            return
        self._count(attempt, task.result())

    def _count(self, attempt: Attempt, outcome: Outcome) -> None:
        self.outcomes[outcome] += 1
        self._period[attempt.queue, outcome._value_] += 1  # a str hashes in C; an Enum (and .value) in Python

    # Stopping ---------------------------------------------------------------------------

    async def _drain(self, store: Store) -> None:
        if not self._running:
            return
        logger.info(
            "Waiting up to %s s for %s running job(s)",
            self.settings.shutdown_timeout,
            len(self._running),
            extra={"action": "draining", "worker_id": self.worker_id},
        )
        tasks = [running.task for running in self._running.values()]
        _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout)
        for running in list(self._running.values()):
            if running.task in pending and running.coroutine:
                running.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running.task
                await self._release(store, running.attempt)
        # Sync jobs cannot be interrupted; wait for them (their thread holds the job's transaction).
        remaining = [running.task for running in self._running.values()]
        if remaining:
            await asyncio.wait(remaining)

    async def _release(self, store: Store, attempt: Attempt) -> None:
        if await store.release(attempt):
            self._count(attempt, Outcome.RELEASED)
            job_finished(attempt, self.worker_id, Outcome.RELEASED, 0.0)

    # Side tasks ---------------------------------------------------------------------------

    async def _every(
        self,
        seconds: float,
        action: Callable[..., Awaitable[None]],
        store: Store,
        *args: Any,
        once: bool = False,
    ) -> None:
        """Run ``action(store, *args)`` every ``seconds`` (or ``once``, now), logging its failures."""
        while not self._stop.is_set():
            if not once:
                await self._pause(seconds)
                if self._stop.is_set():
                    return
            try:
                await action(store, *args)
            except Exception as exc:  # noqa: BLE001 - transient database trouble
                name = action.__name__.strip("_")
                logger.warning(
                    "%s failed: %s: %s", name, type(exc).__name__, exc, extra={"action": f"{name}_failed"}
                )
            if once:
                return

    async def _log_summary(self, store: Store) -> None:
        """One INFO line: the attempts ended since the last one, by outcome (and queue), and those running."""
        now = time.monotonic()
        period, seconds, pickups = self._period, now - self._period_began, self._pickups
        self._period, self._period_began, self._pickups = collections.Counter(), now, _Pickups()
        ended = sorted((queue, outcome, count) for (queue, outcome), count in period.items())
        outcomes: collections.Counter[str] = collections.Counter()
        queues: dict[str, dict[str, int]] = {}
        for queue, outcome, count in ended:
            outcomes[outcome] += count
            queues.setdefault(queue, {})[outcome] = count
        said = _counts(dict(sorted(outcomes.items()))) or "no job ended"
        if len(queues) > 1:
            said += f" ({'; '.join(f'{queue}: {_counts(counted)}' for queue, counted in queues.items())})"
        said += f"; {len(self._running)} running"
        median = pickups.median()
        if median is not None:
            said += (
                f"; {pickups.count} claimed, {median:.3f} s after they were due (median), "
                f"{pickups.longest:.3f} s at most"
            )
        logger.info(
            "Last %.0f s: %s",
            seconds,
            said,
            extra={
                "action": "worker_summary",
                "worker_id": self.worker_id,
                "seconds": round(seconds, 3),
                "outcomes": dict(sorted(outcomes.items())),
                "queues": queues,
                "running": len(self._running),
                "claimed": pickups.count,
                "pickup_median": None if median is None else round(median, 6),
                "pickup_max": None if median is None else round(pickups.longest, 6),
            },
        )

    async def _heartbeat(self, store: Store) -> None:
        running = list(self._running.values())
        held = await store.heartbeat([item.attempt for item in running])
        gone = [item for item in running if item.attempt.job_id not in held]
        if gone:
            await self._stop_lost(store, gone)
        await store.register(self._started)  # alive
        if self.capacity < self.concurrency:
            self.capacity += 1  # try one more slot: connections may have freed up
            self._wake.set()
            if self.capacity == self.concurrency:
                logger.info(
                    "Back to running up to %s jobs at once",
                    self.concurrency,
                    extra={"action": "connections_restored", "worker_id": self.worker_id},
                )

    async def _look_for_cancelled(self, store: Store, job_ids: set[int] | None = None) -> None:
        """Stop the running jobs (among ``job_ids``, or all) that are no longer this worker's."""
        running = [
            item
            for item in self._running.values()
            if (job_ids is None or item.attempt.job_id in job_ids)
            and self._busy.get(item.attempt.job_id) == item.attempt.number
        ]
        if running:
            await self._stop_lost(store, running)

    async def _stop_lost(self, store: Store, candidates: list[_Running]) -> None:
        """Stop the jobs among ``candidates`` that were cancelled or whose lease was taken over.

        A coroutine job is cancelled on the loop, at its next await (its queries autocommit, so
        what it wrote until then stays); a sync job's thread cannot be stopped, so its
        ``current_job().cancel_requested`` is set, and its transaction rolls back whatever it does.
        """
        gone = await store.lost([item.attempt for item in candidates])
        for item in candidates:
            attempt = item.attempt
            if attempt.job_id not in gone or self._busy.get(attempt.job_id) != attempt.number:
                continue  # still held, or its function has returned: its end is being written
            if (stopped := self._stopped.get(attempt.job_id)) is not None and stopped[0] == attempt.number:
                continue  # already stopping
            if gone[attempt.job_id] == "cancelled":
                self._stopped[attempt.job_id] = (attempt.number, Outcome.CANCELLED)
                job_event(
                    logging.INFO,
                    "job_cancelled",
                    attempt,
                    self.worker_id,
                    "was cancelled while it ran; %s",
                    "stopping it at its next await (what it wrote until then stays committed: "
                    "a coroutine's queries autocommit)"
                    if item.coroutine
                    else "asking it to stop (current_job().cancel_requested): its transaction rolls "
                    "back, so nothing it wrote is committed",
                )
            else:
                self._stopped[attempt.job_id] = (attempt.number, Outcome.LEASE_LOST)
                job_event(
                    logging.WARNING,
                    "lease_lost",
                    attempt,
                    self.worker_id,
                    "%s while it ran; nothing it writes will commit",
                    "its lease was taken over" if gone[attempt.job_id] is not None else "it was deleted",
                )
            item.context.request_cancel()
            if item.coroutine:
                item.task.cancel()

    async def _rescue(self, store: Store) -> None:
        while self._unrecorded:
            attempt = self._unrecorded[0]
            await store.release(attempt)  # False when another worker rescued it meanwhile: fine too
            self._unrecorded.pop(0)
            job_finished(attempt, self.worker_id, Outcome.RELEASED, 0.0)
            self._wake.set()
        rescued = await store.rescue()
        if rescued:
            logger.warning(
                "Rescued %s job(s) whose worker was lost: %s",
                len(rescued),
                rescued,
                extra={"action": "jobs_rescued", "job_ids": rescued},
            )
            self._wake.set()

    async def _wake_suspended(self, store: Store) -> None:
        """Queue the jobs whose durable sleep ended or whose wait for an event timed out."""
        woken = await store.wake_suspended()
        if woken:
            logger.debug(
                "Woke %s suspended job(s): %s",
                len(woken),
                woken,
                extra={"action": "jobs_woken", "job_ids": woken},
            )
            self._wake.set()

    def _on_cancel_notice(self, store: Store, payload: str | None) -> None:
        """Stop the jobs a NOTIFY says were cancelled (``None``: any), if they run here, in a task."""
        ids = None if payload is None else {int(part) for part in payload.split(",") if part.isdigit()}
        if not self._running or (ids is not None and not ids & self._running.keys()):
            return
        check = asyncio.create_task(self._every(0, self._look_for_cancelled, store, ids, once=True))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    def _serves(self, queue: str) -> bool:
        return not queue or queue in self.settings.queues or "*" in self.settings.queues

    async def _listen(self, store: Store) -> None:
        failures = 0
        while not self._stop.is_set():
            wakeups = store.listen()
            if wakeups is None:
                return
            try:
                async for kind, payload in wakeups:
                    failures = 0
                    if kind == CANCELLED:
                        self._on_cancel_notice(store, payload)
                    elif kind == QUEUES:
                        self._paused_at = 0.0  # read them again before the next claim
                        self._wake.set()
                    elif not payload:
                        # Listening (again): what was sent before now was missed. Read the paused
                        # queues again, look for jobs (limited ones too), and for cancellations;
                        # a claim waiting for the database to come back need wait no more.
                        self._database_answered()
                        self._paused_at = self._limited_at = 0.0
                        self._on_cancel_notice(store, None)
                        self._wake.set()
                    elif self._serves(payload):
                        self._limited_at = 0.0  # the new job may have limits
                        self._notified = True
                        self._wake.set()
            except Exception as exc:  # noqa: BLE001 - reconnect after a database restart
                failures += 1
                await self._back_off(store, exc, failures, 0.5, _LISTEN_FAILED)
