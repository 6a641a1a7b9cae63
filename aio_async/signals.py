"""Django signals of a job's life: scheduled, started, ended (by outcome) and cancelled.

Every signal is sent with ``sender=Job`` (the model class, as Django's model signals are):
Django's dispatcher matches a sender by identity, so a task's name, a string, could not be
matched reliably. Receivers pick the jobs they care about by the ``name`` and ``queue``
arguments. Every receiver is called through ``send_robust``/``asend_robust``: one that raises
is logged (logger ``django.dispatch``) and ignored; it never fails a schedule(), a cancel() or
a job.

Sent by ``schedule()``, ``schedule_many()`` and ``cancel()`` (in the caller's process):

- ``job_scheduling(job)``: just before new jobs are written, in the caller's thread and
  context, once per job (unsaved: no id yet). A receiver may add JSON values to
  ``job.meta`` (keys starting with ``_`` are aio_async's own); the tracing of
  ``aio_async.otel`` does so.
- ``job_scheduled(job, job_id, name, queue, using)``: once per job written, when the
  transaction that wrote it commits (at once outside a transaction); a rolled-back schedule
  sends nothing. A unique job that was not written (another holds its key) is not sent.
- ``job_cancelled(job_id, name, queue, by, using)``: once per job that ``cancel()`` (or
  ``cancel_pending()``, ``deschedule()``) cancelled, when its transaction commits, whether
  the job had started or not. Jobs cancelled because a job they wait for (``after=``) was
  cancelled or failed are not sent.

Sent by the worker, for each attempt (arguments ``job_id``, ``name``, ``queue``, ``attempt``,
``worker_id``):

- ``job_started``: just before the job's function is called.
- then exactly one of ``job_succeeded``, ``job_retrying``, ``job_failed``, ``job_snoozed``,
  ``job_suspended`` (a durable sleep or a wait for an event) or ``job_stopped``, once the
  attempt's end is recorded, with ``outcome`` (an
  ``aio_async.values.Outcome``), ``duration`` (seconds) and ``error`` (an
  ``ErrorInfo``, or None). ``job_stopped`` is an attempt that ended without a verdict: the
  job was cancelled while it ran (``Outcome.CANCELLED``; ``job_cancelled`` was sent by
  ``cancel()`` already), its lease was taken over (``LEASE_LOST``) or it was given back to
  the queue (``RELEASED``). A job that is refused before it starts (its function no longer
  imports, its row is not valid) sends ``job_retrying`` or ``job_failed`` without
  ``job_started``. Two ends send nothing: a coroutine job interrupted by a stopping worker,
  and an attempt whose end could not be written because the database was away; both go
  back to the queue and run again.

Sent by the worker for each step a job runs (``aio_async.step``; not for a step an earlier
attempt recorded, which does not run again), with ``job_id``, ``name`` (the job's),
``queue``, ``attempt``, ``worker_id`` and ``step`` (the step's name):

- ``step_started``: just before the step's function is called;
- ``step_ended``: once its checkpoint committed, or it raised (after the rollback), with
  ``succeeded`` (bool), ``duration`` (seconds) and ``error`` (an ``ErrorInfo``, or None).

A sync job's step signals are sent from its job thread with ``send_robust``; a coroutine
job's from the loop with ``asend_robust``.

The worker's signals are sent from its event loop with ``asend_robust``: ``async def``
receivers run on the loop (they must not block), plain receivers run in asgiref's
thread-sensitive thread, where they may use the ORM. The worker waits for its receivers, so
a slow one slows the worker down.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from django.db import transaction
from django.dispatch import Signal

from aio_async.models import Job
from aio_async.store import memory
from aio_async.store.memory import MemoryQueue
from aio_async.values import Attempt, ErrorInfo, Outcome

__all__ = [
    "Observer",
    "job_cancelled",
    "job_failed",
    "job_retrying",
    "job_scheduled",
    "job_scheduling",
    "job_snoozed",
    "job_started",
    "job_stopped",
    "job_succeeded",
    "job_suspended",
    "observe",
    "step_ended",
    "step_started",
    "unobserve",
]

logger = logging.getLogger("aio_async.signals")

job_scheduling = Signal()
job_scheduled = Signal()
job_cancelled = Signal()
job_started = Signal()
job_succeeded = Signal()
job_retrying = Signal()
job_failed = Signal()
job_snoozed = Signal()
job_stopped = Signal()
job_suspended = Signal()
step_started = Signal()
step_ended = Signal()

#: The signal each outcome of an attempt sends.
ENDS: dict[Outcome, Signal] = {
    Outcome.SUCCEEDED: job_succeeded,
    Outcome.RETRYING: job_retrying,
    Outcome.FAILED: job_failed,
    Outcome.SNOOZED: job_snoozed,
    Outcome.SUSPENDED: job_suspended,
    Outcome.CANCELLED: job_stopped,
    Outcome.LEASE_LOST: job_stopped,
    Outcome.RELEASED: job_stopped,
}

#: Jobs looked up per statement for ``job_cancelled`` (SQLite caps a statement's parameters).
_LOOKUP_BATCH = 500


# In the caller's process ------------------------------------------------------------------


def scheduling(jobs: Sequence[Job]) -> None:
    """Send ``job_scheduling`` for each job about to be written (nothing to do without receivers)."""
    if not job_scheduling.has_listeners(Job):
        return
    for job in jobs:
        job_scheduling.send_robust(Job, job=job)


def scheduled(jobs: Sequence[Job], using: str, *, at_once: bool = False) -> None:
    """Send ``job_scheduled`` for each job written, once the caller's transaction commits.

    ``at_once``: now (the queue in memory has no transaction to wait for).
    """
    if not jobs or not job_scheduled.has_listeners(Job):
        return
    if at_once:
        _send_scheduled(list(jobs), using)
    else:
        transaction.on_commit(functools.partial(_send_scheduled, list(jobs), using), using=using, robust=True)


def _send_scheduled(jobs: list[Job], using: str) -> None:
    for job in jobs:
        job_scheduled.send_robust(Job, job=job, job_id=job.pk, name=job.name, queue=job.queue, using=using)


def cancelled(job_ids: Sequence[int], by: str, using: str) -> None:
    """Send ``job_cancelled`` for each job cancelled, once the caller's transaction commits.

    Called inside that transaction, just after the cancellation: the jobs' names and queues
    are read there (one query per 500 jobs, only when a receiver is connected).
    """
    if not job_ids or not job_cancelled.has_listeners(Job):
        return
    ids = sorted(set(job_ids))
    found: dict[int, tuple[str, str]] = {}
    for start in range(0, len(ids), _LOOKUP_BATCH):
        rows = Job.objects.using(using).filter(pk__in=ids[start : start + _LOOKUP_BATCH])
        found.update({pk: (name, queue) for pk, name, queue in rows.values_list("pk", "name", "queue")})
    transaction.on_commit(functools.partial(_send_cancelled, ids, found, by, using), using=using, robust=True)


def cancelled_in_memory(queue: MemoryQueue, job_ids: Sequence[int], by: str) -> None:
    """Send ``job_cancelled`` for each job cancelled in the queue in memory, now."""
    if not job_ids or not job_cancelled.has_listeners(Job):
        return
    found = {job.pk: (job.name, job.queue) for job in queue.jobs if job.pk in job_ids}
    _send_cancelled(sorted(set(job_ids)), found, by, "memory")


def on_commit(send: Callable[[], Any], using: str, *, robust: bool = False) -> None:
    """Call ``send`` once the caller's transaction on ``using`` commits; now with the queue in memory."""
    if memory.active() is None:
        transaction.on_commit(send, using=using, robust=robust)
    elif not robust:
        send()
    else:
        try:
            send()
        except Exception:
            logger.exception("A receiver of a job's signal raised")


def _send_cancelled(ids: list[int], found: dict[int, tuple[str, str]], by: str, using: str) -> None:
    for pk in ids:
        name, queue = found.get(pk, ("", ""))
        job_cancelled.send_robust(Job, job_id=pk, name=name, queue=queue, by=by, using=using)


# On the worker ------------------------------------------------------------------------------


class Observer(Protocol):
    """In-process instrumentation of attempts (tracing, metrics), called by the worker directly.

    Unlike a signal's receivers, an observer runs inside the attempt's own asyncio task, so
    what ``started`` puts in the context (a current span) is the context of the job's
    function, and it is told of every end, an interrupted attempt's included (as
    ``RELEASED``). It must be quick and must not raise (what it raises is logged).
    """

    async def started(self, attempt: Attempt, worker_id: str) -> Any:
        """The attempt's function is about to be called; return what ``ended`` is given."""

    def ended(
        self,
        state: Any,
        attempt: Attempt,
        worker_id: str,
        outcome: Outcome,
        duration: float,
        error: ErrorInfo | None,
    ) -> None:
        """The attempt ended (``state`` is None when it never started)."""


_observers: list[Observer] = []


def observe(observer: Observer) -> None:
    """Tell ``observer`` of every attempt this process runs from now on (once, however often called)."""
    if observer not in _observers:
        _observers.append(observer)


def unobserve(observer: Observer) -> None:
    """Stop telling ``observer`` of attempts."""
    if observer in _observers:
        _observers.remove(observer)


@dataclasses.dataclass
class _Live:
    """An attempt between its start and its end, in the attempt's own task context."""

    attempt: Attempt
    worker_id: str
    began: float
    states: list[tuple[Observer, Any]]
    ended: bool = False


_live: contextvars.ContextVar[_Live | None] = contextvars.ContextVar("aio_async_attempt", default=None)


def _arguments(attempt: Attempt, worker_id: str) -> dict[str, Any]:
    return {
        "job_id": attempt.job_id,
        "name": attempt.name,
        "queue": attempt.queue,
        "attempt": attempt.number,
        "worker_id": worker_id,
    }


async def _send(signal: Signal, **arguments: Any) -> None:
    """Send a worker signal; whatever goes wrong is logged, never raised into the worker."""
    if not signal.has_listeners(Job):
        return
    try:
        await signal.asend_robust(Job, **arguments)
    except Exception:  # receivers' errors are logged by Django; this is anything else
        logger.exception(
            "Could not send a signal for job %s", arguments.get("job_id"), extra={"action": "signal_failed"}
        )


async def attempt_started(attempt: Attempt, worker_id: str) -> None:
    """Before the job's function runs, in the attempt's task: tell the observers, send ``job_started``."""
    live = _Live(attempt, worker_id, time.monotonic(), [])
    for observer in list(_observers):
        try:
            live.states.append((observer, await observer.started(attempt, worker_id)))
        except Exception:  # instrumentation never fails a job
            logger.exception("Observer %r failed", observer, extra={"action": "observer_failed"})
    _live.set(live)
    task = asyncio.current_task()
    if live.states and task is not None:
        task.add_done_callback(functools.partial(_interrupted, live))
    await _send(job_started, **_arguments(attempt, worker_id))


def _tell_ended(live: _Live | None, attempt: Attempt, *end: Any) -> None:
    states = live.states if live is not None else [(observer, None) for observer in _observers]
    for observer, state in states:
        try:
            observer.ended(state, attempt, *end)
        except Exception:  # instrumentation never fails a job
            logger.exception("Observer %r failed", observer, extra={"action": "observer_failed"})


def _interrupted(live: _Live, task: asyncio.Task[Any]) -> None:
    """The attempt's task ended without an end (a stopping worker, the database away)."""
    if not live.ended:
        live.ended = True
        _tell_ended(live, live.attempt, live.worker_id, Outcome.RELEASED, time.monotonic() - live.began, None)


async def attempt_ended(
    attempt: Attempt, worker_id: str, outcome: Outcome, duration: float, error: ErrorInfo | None
) -> None:
    """Once the attempt's end is recorded: tell the observers, send the outcome's signal."""
    live = _live.get()
    if live is not None and live.attempt is not attempt:
        live = None
    if live is not None:
        live.ended = True
    _tell_ended(live, attempt, worker_id, outcome, duration, error)
    signal = ENDS[outcome]
    if not signal.has_listeners(Job):
        return
    sending = asyncio.ensure_future(
        _send(signal, **_arguments(attempt, worker_id), outcome=outcome, duration=duration, error=error)
    )
    try:
        await asyncio.shield(sending)
    except asyncio.CancelledError:
        # A stopping worker cancels its jobs: this one has ended and is recorded already, so
        # there is nothing left to stop; its signal is sent all the same.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        await sending


def _step_arguments(attempt: Attempt, worker_id: str, step: str) -> dict[str, Any]:
    return {**_arguments(attempt, worker_id), "step": step}


def step_began(attempt: Attempt, worker_id: str, step: str) -> None:
    """Send ``step_started`` from a sync job's thread."""
    if step_started.has_listeners(Job):
        step_started.send_robust(Job, **_step_arguments(attempt, worker_id, step))


def step_finished(
    attempt: Attempt, worker_id: str, step: str, duration: float, error: ErrorInfo | None
) -> None:
    """Send ``step_ended`` from a sync job's thread."""
    if step_ended.has_listeners(Job):
        step_ended.send_robust(
            Job,
            **_step_arguments(attempt, worker_id, step),
            succeeded=error is None,
            duration=duration,
            error=error,
        )


async def astep_began(attempt: Attempt, worker_id: str, step: str) -> None:
    """Send ``step_started`` from the loop (a coroutine job's step)."""
    await _send(step_started, **_step_arguments(attempt, worker_id, step))


async def astep_finished(
    attempt: Attempt, worker_id: str, step: str, duration: float, error: ErrorInfo | None
) -> None:
    """Send ``step_ended`` from the loop (a coroutine job's step)."""
    await _send(
        step_ended,
        **_step_arguments(attempt, worker_id, step),
        succeeded=error is None,
        duration=duration,
        error=error,
    )
