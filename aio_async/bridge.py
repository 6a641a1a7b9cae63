"""Everything that crosses the line between the asyncio loop and Django's sync ORM.

A sync job runs in a worker thread through ``sync_to_async(thread_sensitive=False)``: its
own work and its fenced completion write happen inside one ``transaction.atomic()`` in one
sync function, because the next bridged call may land on another thread and connection
(DESIGN promise 2). Connections are tidied with ``close_old_connections()`` before and after
every job, so a broken or expired connection is never reused.

The queue's own bookkeeping runs on Django's async ORM thread (``thread_sensitive=True``):
rescue, release, recorded failures, and, where the database has no asyncio connection of
the worker's own (SQLite), claims and leases too. On PostgreSQL, claims, lease renewals and
coroutine jobs' completions go through that direct connection, on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import enum
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.db import InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from aio_async import allow, dialects, store
from aio_async.conf import QueueSettings
from aio_async.errors import FunctionNotFound, ResultNotJSON, ScheduleError
from aio_async.models import Job
from aio_async.payload import JSONError, json_value, normalise_arguments

__all__ = ["Bridge", "Outcome"]

logger = logging.getLogger("aio_async.bridge")

T = TypeVar("T")


class Outcome(enum.Enum):
    """How one attempt of a job ended."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    LEASE_LOST = "lease_lost"
    RELEASED = "released"


def close_old_connections() -> None:
    """Django's ``close_old_connections()``, sparing a connection inside a caller's transaction.

    Closes connections that are broken or past ``CONN_MAX_AGE``, as the end of a request
    would. A connection in an atomic block (a test running jobs inside its transaction) is
    the caller's to manage.
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def discard_broken_connections() -> None:
    """Close connections that raised and are no longer usable (the database restarted)."""
    for connection in connections.all(initialized_only=True):
        if connection.errors_occurred and not connection.in_atomic_block and not connection.is_usable():
            connection.close()


def _discarding_broken(function: Callable[..., T]) -> Callable[..., T]:
    def call(*args: Any, **kwargs: Any) -> T:
        discard_broken_connections()
        return function(*args, **kwargs)

    return call


def _result(value: object) -> Any:
    try:
        return json_value(value, "the result")
    except JSONError as exc:
        raise ResultNotJSON(f"{exc}; return JSON (or nothing) from a job") from None


def connection_lost(exc: BaseException, alias: str) -> bool:
    """True when ``exc`` came from a database connection that is now closed or unusable."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    connection = connections[alias]
    return connection.connection is None or not connection.is_usable()


def _reconnecting(job: Job, write: Callable[[], T]) -> T:
    """Run ``write``; if the connection turns out to be dead (killed while idle), reconnect once."""
    try:
        return write()
    except (OperationalError, InterfaceError) as exc:
        if not connection_lost(exc, job._state.db or "default"):
            raise
        logger.info(
            "Reconnecting to record job %s: %s", job.pk, exc, extra={"action": "reconnect", "job_id": job.pk}
        )
        connections[job._state.db or "default"].close()
        return write()


def _record_failure(
    job: Job,
    error: store.ErrorInfo,
    worker: str,
    settings: QueueSettings,
    *,
    final: bool = False,
    retry_now: bool = False,
) -> Outcome:
    close_old_connections()
    try:
        status = store.fail(job, error, worker, settings, final=final, retry_now=retry_now)
    except store.LeaseLost:
        logger.warning(
            "Job %s failed, but its lease was lost; the failure is not recorded",
            job.pk,
            extra={"action": "lease_lost", "job_id": job.pk, "worker": worker},
        )
        return Outcome.LEASE_LOST
    logger.info(
        "Job %s (%s) attempt %s failed: %s: %s",
        job.pk,
        job.name,
        job.attempts,
        error.exception,
        error.message,
        extra={"action": "job_failed" if status == "failed" else "job_retrying", "job_id": job.pk},
    )
    return Outcome.FAILED if status == "failed" else Outcome.RETRYING


def _complete_or_lose(job: Job, worker: str, work: Callable[[], Any]) -> Outcome:
    """Run ``work`` and the fenced completion write in one transaction."""
    alias = job._state.db or "default"
    try:
        with transaction.atomic(using=alias):
            result = _result(work())
            store.complete(job, result, worker)
    except store.LeaseLost:
        logger.warning(
            "Job %s finished, but its lease was taken over; its transaction rolled back",
            job.pk,
            extra={"action": "lease_lost", "job_id": job.pk, "worker": worker},
        )
        return Outcome.LEASE_LOST
    logger.debug("Job %s succeeded", job.pk, extra={"action": "job_succeeded", "job_id": job.pk})
    return Outcome.SUCCEEDED


def run_sync_job(
    job: Job,
    function: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    worker: str,
    settings: QueueSettings,
) -> Outcome:
    """Run a sync job and its completion atomically in this thread; record a failure after."""
    close_old_connections()
    try:
        try:
            return _complete_or_lose(job, worker, lambda: function(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a job must not stop the worker
            error = store.ErrorInfo.from_exception(exc)
            lost = connection_lost(exc, job._state.db or "default")
        # A connection that died under the job (a database restart, a killed backend) is not
        # the job's fault: it is retried at once, on a new connection.
        return _record_failure(job, error, worker, settings, retry_now=lost)
    finally:
        close_old_connections()


def complete_coroutine_jobs(finished: list[tuple[Job, Any]], worker: str) -> list[Outcome]:
    """Write finished coroutine jobs' completions, each fenced, in one transaction.

    Runs on the thread of Django's async ORM (``thread_sensitive=True``), whose connection
    the jobs themselves used, and tidies it first, as the end of a request would.
    """
    close_old_connections()
    held = _reconnecting(finished[0][0], lambda: store.complete_many(finished, worker))
    for (job, _), kept in zip(finished, held, strict=True):
        if not kept:
            logger.warning(
                "Job %s finished, but its lease was taken over; its completion is not recorded",
                job.pk,
                extra={"action": "lease_lost", "job_id": job.pk, "worker": worker},
            )
    return [Outcome.SUCCEEDED if kept else Outcome.LEASE_LOST for kept in held]


def fail_coroutine_job(
    job: Job, exc: BaseException, error: store.ErrorInfo, worker: str, settings: QueueSettings
) -> Outcome:
    """Record a coroutine job's failed attempt, on the async ORM's thread, whose connection it used."""
    lost = connection_lost(exc, job._state.db or "default")
    return fail_job(job, error, worker, settings, False, retry_now=lost)


def fail_job(
    job: Job,
    error: store.ErrorInfo,
    worker: str,
    settings: QueueSettings,
    final: bool,
    retry_now: bool = False,
) -> Outcome:
    """Record a failed attempt from the loop's side (coroutine jobs, refused rows)."""
    close_old_connections()
    try:
        return _reconnecting(
            job, lambda: _record_failure(job, error, worker, settings, final=final, retry_now=retry_now)
        )
    finally:
        close_old_connections()


def prepare(job: Job) -> tuple[Callable[..., Any], list[Any], dict[str, Any]]:
    """The callable and arguments a claimed row names, checked again (rows can be forged)."""
    function = allow.resolve(job.name)
    args, kwargs = normalise_arguments(job.args, job.kwargs)
    return function, args, kwargs


def refuse(job: Job, exc: ScheduleError, worker: str, settings: QueueSettings) -> Outcome:
    """Record a row that cannot run: retried if its name does not import, else failed now."""
    # A name that does not import may be a deploy in progress, so it is retried; a callable
    # that is not allowed or not callable, or arguments that are not JSON, never will run.
    final = not isinstance(exc, FunctionNotFound)
    return fail_job(job, store.ErrorInfo.from_exception(exc), worker, settings, final)


#: Whether an allowed callable is a coroutine function, asked once per callable.
_is_coroutine = functools.cache(iscoroutinefunction)


def _close_connections() -> None:
    connections.close_all()


_in_async_orm_thread_complete = sync_to_async(complete_coroutine_jobs, thread_sensitive=True)
_in_async_orm_thread_fail = sync_to_async(fail_coroutine_job, thread_sensitive=True)
_close_async_orm_connection = sync_to_async(_close_connections, thread_sensitive=True)


@dataclasses.dataclass
class Bridge:
    """The worker's side of the line: thread pools and the bridged queue operations."""

    alias: str
    worker: str
    settings: QueueSettings
    concurrency: int
    jobs_pool: concurrent.futures.ThreadPoolExecutor = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self._finished: list[tuple[Job, Any, asyncio.Future[Outcome]]] = []
        self._recorder: asyncio.Task[None] | None = None
        self.jobs_pool = concurrent.futures.ThreadPoolExecutor(
            self.concurrency, thread_name_prefix="aio_async-job"
        )
        connection = connections[self.alias]
        self.direct = dialects.for_connection(connection).direct(connection)

    def _control(self, function: Callable[..., T]) -> Callable[..., Awaitable[T]]:
        # The async ORM's thread keeps its connection for the queue's bookkeeping, whatever
        # CONN_MAX_AGE says, and replaces it only once it is broken.
        return sync_to_async(_discarding_broken(function), thread_sensitive=True)

    def _in_job_thread(self, function: Callable[..., T]) -> Callable[..., Awaitable[T]]:
        return sync_to_async(function, thread_sensitive=False, executor=self.jobs_pool)

    async def claim(
        self, limit: int, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
    ) -> list[Job]:
        """Lease up to ``limit`` due jobs to this worker."""
        if self.direct is not None:
            now = timezone.now()
            lease_until = now + datetime.timedelta(seconds=self.settings.lease_seconds)
            queues = self.settings.queues
            return await self.direct.claim(
                dialects.Claim(self.worker, queues, limit, now, lease_until, include, exclude)
            )
        return await self._control(store.claim)(
            self.alias,
            worker=self.worker,
            queues=self.settings.queues,
            limit=limit,
            lease_seconds=self.settings.lease_seconds,
            include=include,
            exclude=exclude,
        )

    async def heartbeat(self, job_ids: list[int]) -> int:
        """Extend this worker's leases on ``job_ids``."""
        if self.direct is not None and job_ids:
            until = timezone.now() + datetime.timedelta(seconds=self.settings.lease_seconds)
            return await self.direct.heartbeat(job_ids, self.worker, until)
        return await self._control(store.heartbeat)(
            self.alias, job_ids, self.worker, self.settings.lease_seconds
        )

    async def rescue(self) -> list[int]:
        """Requeue jobs whose lease expired (their worker is gone)."""
        return await self._control(store.rescue)(self.alias, self.worker, self.settings)

    async def release(self, job: Job) -> bool:
        """Give a job back to the queue without using up its attempt."""
        return await self._control(store.release)(job, self.worker)

    async def run(self, job: Job, ran: Callable[[], None] = lambda: None) -> Outcome:
        """Run one claimed job to the end of its attempt and record how it ended.

        ``ran`` is called once a coroutine job's function has returned or raised, before its
        outcome is written: the job no longer needs its slot.
        """
        try:
            function, args, kwargs = prepare(job)
        except ScheduleError as exc:
            return await self._control(refuse)(job, exc, self.worker, self.settings)
        if _is_coroutine(function):
            return await self._run_coroutine(job, function, args, kwargs, ran)
        future = asyncio.ensure_future(
            self._in_job_thread(run_sync_job)(job, function, args, kwargs, self.worker, self.settings)
        )
        try:
            return await asyncio.wait_for(asyncio.shield(future), job.timeout)
        except TimeoutError:
            return await self._overran(job, future)
        except asyncio.CancelledError:
            # A thread cannot be stopped: let the job and its own records finish first.
            await future
            raise

    async def _overran(self, job: Job, future: asyncio.Future[Outcome]) -> Outcome:
        """Fail a sync job past its timeout now; fencing refuses its thread's late completion."""
        error = store.ErrorInfo(
            exception="TimeoutError",
            message=(
                f"the job ran past its timeout of {job.timeout:g} s; its thread cannot be "
                "stopped, so whatever it commits later is rolled back by the lease check"
            ),
            traceback="",
        )
        outcome = await self._control(fail_job)(job, error, self.worker, self.settings, False)

        def late(done: asyncio.Future[Outcome]) -> None:
            if not done.cancelled() and done.exception() is None:
                logger.warning(
                    "Job %s finished after its timeout: %s",
                    job.pk,
                    done.result().value,
                    extra={"action": "job_finished_late", "job_id": job.pk},
                )

        future.add_done_callback(late)
        return outcome

    async def _run_coroutine(
        self,
        job: Job,
        function: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        ran: Callable[[], None],
    ) -> Outcome:
        try:
            if job.timeout is None:
                value = await function(*args, **kwargs)
            else:
                async with asyncio.timeout(job.timeout):
                    value = await function(*args, **kwargs)
            result = _result(value)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - recorded, the worker lives on
            error = store.ErrorInfo.from_exception(exc)
            ran()
            return await asyncio.shield(
                _in_async_orm_thread_fail(job, exc, error, self.worker, self.settings)
            )
        ran()
        return await self._complete_coroutine(job, result)

    async def _complete_coroutine(self, job: Job, result: Any) -> Outcome:
        """Queue the completion; completions that pile up while one is written go in one batch."""
        outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._finished.append((job, result, outcome))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_finished(), name="record-completions")
        return await outcome  # cancelled with its job: the batch then leaves it alone

    async def _record_finished(self) -> None:
        while self._finished:
            batch, self._finished = self._finished, []
            # A group member's completion may release its group's final job, in the same
            # transaction: that takes the ORM. The rest go in one statement where they can.
            direct: list[tuple[Job, Any, asyncio.Future[Outcome]]] = []
            through_orm: list[tuple[Job, Any, asyncio.Future[Outcome]]] = []
            for item in batch:
                (direct if self.direct is not None and item[0].group_id is None else through_orm).append(item)
            for items, record in ((direct, self._complete_directly), (through_orm, self._complete_in_orm)):
                if not items:
                    continue
                try:
                    outcomes = await record([(job, result) for job, result, _ in items])
                except Exception as exc:  # noqa: BLE001 - each job's task reports it
                    for _, _, outcome in items:
                        if not outcome.done():
                            outcome.set_exception(exc)
                    continue
                for (_, _, outcome), value in zip(items, outcomes, strict=True):
                    if not outcome.done():
                        outcome.set_result(value)

    async def _complete_in_orm(self, finished: list[tuple[Job, Any]]) -> list[Outcome]:
        return await _in_async_orm_thread_complete(finished, self.worker)

    async def _complete_directly(self, finished: list[tuple[Job, Any]]) -> list[Outcome]:
        assert self.direct is not None
        held = await self.direct.complete(finished, self.worker, timezone.now())
        outcomes = []
        for job, _ in finished:
            if job.pk in held:
                outcomes.append(Outcome.SUCCEEDED)
                continue
            logger.warning(
                "Job %s finished, but its lease was taken over; its completion is not recorded",
                job.pk,
                extra={"action": "lease_lost", "job_id": job.pk, "worker": self.worker},
            )
            outcomes.append(Outcome.LEASE_LOST)
        return outcomes

    async def close(self) -> None:
        """Close every thread's database connection and stop the pools."""
        if self._recorder is not None:
            await self._recorder
        if self.direct is not None:
            await self.direct.close()
        await _close_async_orm_connection()
        # Each pool thread owns its own connection; a barrier gives every thread one close.
        barrier = threading.Barrier(self.concurrency)

        def close_here() -> None:
            barrier.wait(timeout=30)
            connections.close_all()

        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self.jobs_pool, close_here) for _ in range(self.concurrency)),
            return_exceptions=True,
        )
        self.jobs_pool.shutdown(wait=False)
