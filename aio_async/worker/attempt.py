"""One attempt of a job, run to its end and recorded once: the worker's one attempt runner.

``run_attempt`` resolves the row (``allow.runnable``), sends ``job_started``, runs the job (a
coroutine awaited on the loop, cancelled at its timeout; a sync function through the store's
job threads, its work and its fenced completion in one transaction) and records exactly one
end through the store, then sends that end's signal. The worker's bookkeeping of its slots is
the ``Slots`` it is given: the executor's, in a worker and in ``aio_async.testing`` alike.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from aio_async import allow, context, signals, steps
from aio_async.bridge import NoConnection
from aio_async.context import JobContext
from aio_async.errors import EventTimeout, FunctionNotFound, JobRefused, Snooze
from aio_async.log import job_event, job_finished
from aio_async.payload import result_value
from aio_async.store.protocol import Store
from aio_async.values import TIMED_OUT, Attempt, ErrorInfo, Outcome

__all__ = ["Slots", "run_attempt"]


class Slots(Protocol):
    """What an attempt tells the worker that runs it, and asks of it."""

    worker_id: str

    def free(self, attempt: Attempt) -> None:
        """The job's function returned (its end may still be committing): its slot is free."""

    def wake(self) -> None:
        """Claim again now (a job was given back, due at once)."""

    def running_coroutine(self, attempt: Attempt) -> None:
        """The attempt runs a coroutine: a stop can cancel it."""

    def stopped_as(self, attempt: Attempt) -> Outcome | None:
        """The end a stopped attempt takes (cancelled, its lease lost, failed at its timeout), or None."""

    def stop_as(self, attempt: Attempt, outcome: Outcome) -> None:
        """The attempt is stopped, ending as ``outcome``."""

    def connections_short(self, exc: NoConnection) -> None:
        """A job thread could not connect: run fewer jobs at once for a while."""


async def run_attempt(store: Store, attempt: Attempt, job: JobContext, slots: Slots) -> Outcome:
    """Run one attempt to its end and record how it ended."""
    began = time.monotonic()
    context.enter(job)  # this task's context, copied to a job thread
    error: ErrorInfo | None = None
    in_thread = False  # a sync job's slot is freed by its thread, once its function returned
    try:
        try:
            target, args, kwargs = allow.runnable(attempt)
        except JobRefused as exc:
            error = ErrorInfo.from_exception(exc)
            # A name that does not import may be a deploy in progress, so it is retried;
            # anything else about the row will never run.
            retry = isinstance(exc.__cause__, FunctionNotFound)
            outcome = await asyncio.shield(store.fail(attempt, error, final=not retry))
        else:
            call = functools.partial(target.function, *args, **kwargs)
            await signals.attempt_started(attempt, slots.worker_id)  # job_started; the job's span
            if target.is_coroutine:
                slots.running_coroutine(attempt)
                # This task's context; made on the job's first step.
                steps.enter(functools.partial(steps.StoreScribe, store, attempt, slots.worker_id))
                outcome, error = await _run_coroutine(store, attempt, call, slots)
            else:
                in_thread = True
                outcome, error = await _run_sync(store, attempt, call, slots)
    finally:
        if not in_thread:
            slots.free(attempt)
    if outcome is Outcome.LEASE_LOST and slots.stopped_as(attempt) is Outcome.CANCELLED:
        outcome, error = Outcome.CANCELLED, None  # its writes were refused because of that
    duration = time.monotonic() - began
    job_finished(attempt, slots.worker_id, outcome, duration, error)
    await signals.attempt_ended(attempt, slots.worker_id, outcome, duration, error)
    return outcome


async def _run_coroutine(
    store: Store, attempt: Attempt, call: Callable[[], Any], slots: Slots
) -> tuple[Outcome, ErrorInfo | None]:
    deadline: asyncio.Timeout | None = None
    try:
        if attempt.timeout is None:
            value = await call()
        else:
            async with asyncio.timeout(attempt.timeout) as deadline:
                value = await call()
        result = result_value(value)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        stopped = slots.stopped_as(attempt)
        if stopped is None or task is None or task.uncancel():
            raise  # a shutdown, or more than the job's cancellation
        slots.free(attempt)
        return stopped, None
    except Snooze as snoozed:
        slots.free(attempt)
        return await asyncio.shield(store.snooze(attempt, snoozed.seconds)), None
    except steps.Stopped as stopped:  # a durable sleep or wait, committed; or the lease lost
        slots.free(attempt)
        return stopped.outcome, None
    except BaseException as exc:  # noqa: BLE001 - recorded; the worker lives on
        slots.free(attempt)
        if isinstance(exc, TimeoutError) and deadline is not None and deadline.expired():
            # asyncio.timeout() raises a TimeoutError without a message: say what happened.
            said = f"{TIMED_OUT} of {attempt.timeout:g} s and was cancelled"
            timed_out = TimeoutError(said).with_traceback(exc.__traceback__)
            timed_out.__cause__ = exc.__cause__  # the cancel, where the job was awaiting
            exc = timed_out
        error = ErrorInfo.from_exception(exc)
        final = isinstance(exc, EventTimeout)  # a recorded timeout would time out again
        return await asyncio.shield(store.fail(attempt, error, final=final, cause=exc)), error
    slots.free(attempt)
    return await asyncio.shield(store.complete(attempt, result)), None


async def _run_sync(
    store: Store, attempt: Attempt, call: Callable[[], Any], slots: Slots
) -> tuple[Outcome, ErrorInfo | None]:
    loop = asyncio.get_running_loop()

    def returned() -> None:
        loop.call_soon_threadsafe(slots.free, attempt)

    future = asyncio.ensure_future(store.run_sync(attempt, call, returned))
    try:
        return await asyncio.wait_for(asyncio.shield(future), attempt.timeout)
    except TimeoutError:
        return await _overran(store, attempt, future, slots)
    except NoConnection as exc:
        return await _no_connection(store, attempt, exc, slots)
    except asyncio.CancelledError:
        # A thread cannot be stopped: let the job and its own records finish first.
        await future
        raise
    finally:
        if future.done():
            slots.free(attempt)


async def _overran(
    store: Store,
    attempt: Attempt,
    future: asyncio.Future[tuple[Outcome, ErrorInfo | None]],
    slots: Slots,
) -> tuple[Outcome, ErrorInfo | None]:
    """Fail a sync job past its timeout now; its thread's late completion will be refused."""
    error = ErrorInfo.from_exception(
        TimeoutError(
            f"{TIMED_OUT} of {attempt.timeout:g} s; its thread cannot be "
            "stopped, so whatever it does later is rolled back instead of committed"
        )
    )
    # Failed here, not lost: the heartbeat must not report its lease as taken over.
    slots.stop_as(attempt, Outcome.FAILED)
    outcome = await store.fail(attempt, error)

    def late(done: asyncio.Future[tuple[Outcome, ErrorInfo | None]]) -> None:
        slots.free(attempt)
        if not done.cancelled() and done.exception() is None:
            ended = done.result()[0]
            job_event(
                logging.WARNING,
                "job_finished_late",
                attempt,
                slots.worker_id,
                "its thread returned after the timeout of %g s; %s",
                attempt.timeout,
                "nothing it wrote was committed (the job had been failed at its timeout)"
                if ended is Outcome.LEASE_LOST
                else ended.value,
            )

    future.add_done_callback(late)
    return outcome, error


async def _no_connection(
    store: Store, attempt: Attempt, exc: NoConnection, slots: Slots
) -> tuple[Outcome, ErrorInfo | None]:
    """Give back a job whose thread could not connect, and run fewer jobs for a while."""
    slots.free(attempt)
    slots.connections_short(exc)
    released = await asyncio.shield(store.release(attempt))
    slots.wake()  # it is due again at once
    return (Outcome.RELEASED if released else Outcome.LEASE_LOST), None
