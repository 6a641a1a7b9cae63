"""Durable steps, sleeps and waits for events inside a job, and the events that end the waits.

A job made of steps records each one in its journal (``models.Step``) as it commits; a later
attempt (a retry, a rescue after a crash, the wake-up after a sleep) runs the job's function
again from the top, and each step the journal holds returns its recorded result instead of
running again. So the job resumes at its first unfinished step:

- ``step(name, fn, *args, **kwargs)`` (``astep`` in a coroutine job) runs ``fn`` in a
  transaction of its own with its checkpoint, under the job's fence: a worker that lost the
  job cannot commit a step, and no step's database work commits twice. In a sync job, what
  the job wrote since its last step commits with the step too (and is rolled back when a
  later attempt replays the recorded step: it committed then).
- ``sleep(name, delay)`` (``asleep``) ends the attempt without charging it and frees its
  slot; the job resumes after ``delay``, at the next step.
- ``wait_for(name, key, timeout=)`` (``await_for``) returns the payload of the event sent
  with ``notify_event(key, payload)`` (``anotify_event``), suspending the job (no slot, no
  lease) until it is sent or the timeout passes (``EventTimeout``).

The journal's rules are written once, as plans (generators that ask a scribe to read or
write); ``bridge.StepScribe`` carries them out in a sync job's thread and transaction,
``StoreScribe`` through the worker's store for a coroutine job.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime
import inspect
import time
from collections.abc import Callable, Generator
from typing import Any, Protocol, TypeVar

from django.db import transaction
from django.utils import timezone

from aio_async import signals
from aio_async.conf import get_settings
from aio_async.context import current_job
from aio_async.errors import EventTimeout, Snooze, StepError, StepsChanged
from aio_async.payload import json_value
from aio_async.store import journal as ops
from aio_async.store.drivers.django import run
from aio_async.store.protocol import Store
from aio_async.store.statements import Op
from aio_async.values import Attempt, Checkpoint, ErrorInfo, Outcome

__all__ = [
    "Journal",
    "Scribe",
    "StepScribe",
    "Stopped",
    "StoreScribe",
    "anotify_event",
    "asleep",
    "astep",
    "await_for",
    "failed",
    "forget_steps",
    "notify_event",
    "sleep",
    "step",
    "stored",
    "wait_for",
]

R = TypeVar("R")

#: Longest name a step may have (the journal's column).
NAME_LENGTH = 255


class Stopped(BaseException):
    """The attempt ends here, as ``outcome`` (suspended, or its lease lost): its function unwinds.

    A ``BaseException``, so that a job's ``except Exception`` does not swallow it.
    """

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


@dataclasses.dataclass
class Journal:
    """One attempt's view of its job's journal: what earlier attempts recorded, what this one reached."""

    attempt: Attempt
    worker_id: str
    #: The recorded checkpoints by name; None until read (a first attempt has none to read).
    recorded: dict[str, Checkpoint] | None = None
    reached: list[str] = dataclasses.field(default_factory=list)
    #: Set once the attempt suspended or lost its job: no step may run after that.
    over: Outcome | None = None

    def __post_init__(self) -> None:
        if self.attempt.number <= 1:
            self.recorded = {}

    def reach(self, name: str, kind: str) -> Checkpoint | None:
        """Mark ``name`` reached by this attempt; its recorded checkpoint, if it has one that counts."""
        if self.over is not None:
            raise StepError(
                f"the job's attempt ended ({self.over.value}): {kind} {name!r} cannot run after it"
            )
        if not isinstance(name, str) or not name or len(name) > NAME_LENGTH:
            raise StepError(
                f"a step's name is a non-empty string of at most {NAME_LENGTH} characters, got {name!r:.80}"
            )
        if name in self.reached:
            raise StepError(
                f"the job reached a step named {name!r} twice: each step of a job needs a name of its own"
            )
        self.reached.append(name)
        assert self.recorded is not None
        point = self.recorded.get(name)
        if point is not None and point.kind != kind and point.status != "failed":
            raise StepsChanged(
                f"{name!r} was recorded as a {point.kind} and is now a {kind}: the job's code changed "
                "while it was in flight"
            )
        return None if point is None or point.status == "failed" else point

    def going_on(self, name: str) -> None:
        """Before a new checkpoint: every recorded one with an effect must have been reached."""
        assert self.recorded is not None
        missed = ops.unreached(self.recorded, self.reached)
        if missed:
            names = ", ".join(map(repr, missed))
            raise StepsChanged(
                f"the job recorded {names} in an earlier attempt, and its code now runs {name!r} "
                f"without reaching {'it' if len(missed) == 1 else 'them'}: its code changed while it was "
                "in flight. Nothing new ran. Deploy code that reaches them, or forget them "
                f"(aio_async.forget_steps({self.attempt.job_id}, ...)) to run the new code from there"
            )

    def new(self, name: str, kind: str, status: str, **fields: Any) -> Checkpoint:
        """A checkpoint of this attempt, placed after every recorded one."""
        assert self.recorded is not None
        known = self.recorded.get(name)
        position = known.position if known is not None else len(self.recorded)
        return Checkpoint(name, position, kind, status, self.attempt.number, worker=self.worker_id, **fields)

    def keep(self, point: Checkpoint) -> None:
        """``point`` committed."""
        assert self.recorded is not None
        self.recorded[point.name] = point


class Scribe(Protocol):
    """What a plan asks of the attempt running it (sync; ``StoreScribe`` has the same, awaitable)."""

    def load(self) -> dict[str, Checkpoint]:
        """The job's journal."""

    def replayed(self) -> None:
        """A recorded checkpoint was reached again: what was written since the last one is rolled back."""

    def run(
        self, point: Checkpoint, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run a step's function and commit ``point`` with its writes; its JSON result."""

    def suspend(self, point: Checkpoint) -> None:
        """Commit a sleep or wait as ``point`` and let the job go (raises ``Stopped``)."""

    def woke(self, point: Checkpoint) -> None:
        """Record that a sleep ended (what was written since the last checkpoint is rolled back)."""

    def wait(self, point: Checkpoint) -> tuple[str, Any]:
        """Look for the wait's event; record it, its timeout, or suspend (``ops.wait_event``)."""


# The plans: the journal's rules, once ---------------------------------------------------

Plan = Generator[tuple[Any, ...], Any, R]


def _step_plan(journal: Journal, name: str, fn: Callable[..., Any], args: Any, kwargs: Any) -> Plan[Any]:
    if not callable(fn):
        raise StepError(f"step {name!r}: {fn!r:.80} is not callable")
    if journal.recorded is None:
        journal.recorded = yield ("load",)
    point = journal.reach(name, "step")
    if point is not None:
        yield ("replayed",)
        return point.result
    journal.going_on(name)
    return (yield ("run", journal.new(name, "step", "succeeded"), fn, args, kwargs))


def _sleep_plan(journal: Journal, name: str, delay: datetime.timedelta | float) -> Plan[None]:
    seconds = delay.total_seconds() if isinstance(delay, datetime.timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < 10**10:
        raise StepError(f"sleep {name!r}: the delay is a timedelta or seconds from 0, got {delay!r:.80}")
    if journal.recorded is None:
        journal.recorded = yield ("load",)
    point = journal.reach(name, "sleep")
    now = timezone.now()
    if point is not None and point.status == "succeeded":
        yield ("replayed",)
        return None
    if point is not None:
        assert point.until is not None
        if point.until <= now:
            yield ("woke", point)  # the first attempt past the sleep records that it ended
            return None
        yield ("suspend", point)  # woken early (a retry, say): it sleeps the rest
        return None
    journal.going_on(name)
    until = now + datetime.timedelta(seconds=seconds)
    yield ("suspend", journal.new(name, "sleep", "sleeping", started=now, until=until))
    return None


def _wait_plan(
    journal: Journal, name: str, key: str, timeout: datetime.timedelta | float | None
) -> Plan[Any]:
    if not isinstance(key, str) or not key or len(key) > NAME_LENGTH:
        raise StepError(
            f"wait {name!r}: an event key is a non-empty string of at most {NAME_LENGTH} characters"
        )
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else timeout
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0
    ):
        raise StepError(
            f"wait {name!r}: the timeout is a timedelta, seconds from 0 or None, got {timeout!r:.80}"
        )
    if journal.recorded is None:
        journal.recorded = yield ("load",)
    point = journal.reach(name, "event")
    if point is not None and point.status != "waiting":
        yield ("replayed",)
        if point.status == "timed_out":
            raise EventTimeout(f"no event {point.key!r} came for the wait {name!r} before its timeout")
        return point.result
    if point is not None and point.key != key:
        raise StepsChanged(f"the wait {name!r} was for event {point.key!r} and is now for {key!r}")
    if point is None:
        journal.going_on(name)
        now = timezone.now()
        until = None if seconds is None else now + datetime.timedelta(seconds=seconds)
        point = journal.new(name, "event", "waiting", started=now, until=until, key=key)
    state, payload = yield ("wait", point)
    if state == "timed_out":
        raise EventTimeout(f"no event {key!r} came for the wait {name!r} before its timeout")
    return payload


def _drive(scribe: Scribe, plan: Plan[R]) -> R:
    """Carry out a plan in a sync job's thread."""
    try:
        request = next(plan)
        while True:
            request = plan.send(getattr(scribe, request[0])(*request[1:]))
    except StopIteration as done:
        result: R = done.value
        return result


async def _adrive(scribe: StoreScribe, plan: Plan[R]) -> R:
    """Carry out a plan in a coroutine job."""
    try:
        request = next(plan)
        while True:
            request = plan.send(await getattr(scribe, request[0])(*request[1:]))
    except StopIteration as done:
        result: R = done.value
        return result


# Where the current attempt's scribe is found ----------------------------------------------

_scribe: contextvars.ContextVar[Any] = contextvars.ContextVar("aio_async_steps", default=None)


def enter(scribe: Callable[[], Any]) -> contextvars.Token[Any]:
    """Make ``scribe()`` the scribe the durable functions use here (the attempt runner, the bridge).

    It is made on first use: most jobs have no steps, and pay for none.
    """
    return _scribe.set(_Lazy(scribe))


class _Lazy:
    """A scribe not made yet."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def leave(token: contextvars.Token[Any]) -> None:
    """Undo ``enter``."""
    _scribe.reset(token)


def _found(what: str, kind: type[Any]) -> Any:
    scribe = _scribe.get()
    if isinstance(scribe, _Lazy):
        scribe = scribe.make()
        _scribe.set(scribe)
    if scribe is None:
        try:
            current_job()
        except LookupError:
            raise StepError(
                f"{what}() runs inside a job run by a worker (aio_async.current_job() is unknown here)"
            ) from None
        raise StepError(f"{what}() needs the job's database: it cannot run in aio_async.testing.in_memory()")
    if not isinstance(scribe, kind):
        twin = {"step": "astep", "sleep": "asleep", "wait_for": "await_for"}
        if kind is StoreScribe:
            plain = {value: key for key, value in twin.items()}[what]
            raise StepError(f"await {what}() is for coroutine jobs: a sync job calls {plain}()")
        raise StepError(f"{what}() is for sync jobs: a coroutine job awaits {twin[what]}()")
    return scribe


# The public functions -------------------------------------------------------------------


def step(name: str, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Run ``fn(*args, **kwargs)`` as the job's step ``name``, once: its writes commit with its checkpoint."""
    scribe = _found("step", StepScribe)
    if inspect.iscoroutinefunction(fn):
        raise StepError(f"step {name!r}: {fn!r:.80} is a coroutine function; a coroutine job awaits astep()")
    result: R = _drive(scribe, _step_plan(scribe.journal, name, fn, args, kwargs))
    return result


async def astep(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``step()`` in a coroutine job: a sync ``fn`` runs in a transaction in a job thread (or is awaited)."""
    scribe = _found("astep", StoreScribe)
    return await _adrive(scribe, _step_plan(scribe.journal, name, fn, args, kwargs))


def sleep(name: str, delay: datetime.timedelta | float) -> None:
    """A durable sleep: the attempt ends here, uncharged, and the job resumes after ``delay``."""
    scribe = _found("sleep", StepScribe)
    _drive(scribe, _sleep_plan(scribe.journal, name, delay))


async def asleep(name: str, delay: datetime.timedelta | float) -> None:
    """``sleep()`` in a coroutine job."""
    scribe = _found("asleep", StoreScribe)
    await _adrive(scribe, _sleep_plan(scribe.journal, name, delay))


def wait_for(name: str, key: str, *, timeout: datetime.timedelta | float | None = None) -> Any:
    """Wait for the event ``key`` (``notify_event``), the job suspended meanwhile: its payload."""
    scribe = _found("wait_for", StepScribe)
    return _drive(scribe, _wait_plan(scribe.journal, name, key, timeout))


async def await_for(
    name: str,
    key: str,
    *,
    timeout: datetime.timedelta | float | None = None,  # noqa: ASYNC109 - durable, not asyncio's
) -> Any:
    """``wait_for()`` in a coroutine job."""
    scribe = _found("await_for", StoreScribe)
    return await _adrive(scribe, _wait_plan(scribe.journal, name, key, timeout))


def notify_event(key: str, payload: Any = None, *, using: str | None = None) -> list[int]:
    """Send the event ``key``, in the caller's transaction; the ids of the jobs it woke.

    A job that reaches its wait later still receives it. Rolled back, it wakes nobody.
    """
    if not isinstance(key, str) or not key or len(key) > NAME_LENGTH:
        raise StepError(
            f"an event key is a non-empty string of at most {NAME_LENGTH} characters, got {key!r:.80}"
        )
    value = json_value(payload, "the event's payload")
    alias = using or get_settings().database
    with transaction.atomic(using=alias):
        return run(lambda dialect: ops.notify_event(dialect, key, value, timezone.now()), alias)


async def anotify_event(key: str, payload: Any = None, *, using: str | None = None) -> list[int]:
    """``notify_event()`` from async code, in its own transaction."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(notify_event)(key, payload, using=using)


def forget_steps(job_id: int, *names: str, using: str | None = None) -> int:
    """Delete recorded checkpoints of a job (a step renamed or removed by a deploy); how many.

    Their effects stay committed: the job's next attempt runs its code as if they never ran.
    """
    alias = using or get_settings().database
    with transaction.atomic(using=alias):
        return run(lambda dialect: ops.forget_steps(job_id, names), alias)


# A coroutine job's scribe: through the worker's store ---------------------------------------


class StoreScribe:
    """Carries out the plans of a coroutine job through the worker's store."""

    def __init__(self, store: Store, attempt: Attempt, worker_id: str) -> None:
        self.store = store
        self.attempt = attempt
        self.worker_id = worker_id
        self.journal = Journal(attempt, worker_id)

    async def load(self) -> dict[str, Checkpoint]:
        """The job's journal."""
        return await self.store.read_steps(self.attempt)

    async def replayed(self) -> None:
        """Nothing to roll back: a coroutine job has no transaction between steps."""

    async def run(
        self, point: Checkpoint, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run the step: a sync ``fn`` in a job thread; a coroutine awaited, then recorded."""
        await signals.astep_began(self.attempt, self.worker_id, point.name)
        began = time.monotonic()
        point.started = timezone.now()
        try:
            if inspect.iscoroutinefunction(fn):
                point.result = stored(await fn(*args, **kwargs))
                point.ended = timezone.now()
                held = await self.store.checkpoint(self.attempt, point)
            else:
                held, point.result = await self.store.run_step(
                    self.attempt, point, lambda: fn(*args, **kwargs)
                )
        except Stopped:
            raise
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError | Snooze):  # a snooze is not the step's failure
                error = ErrorInfo.from_exception(exc)
                await asyncio.shield(self.store.checkpoint(self.attempt, failed(point, error)))
                await signals.astep_finished(
                    self.attempt, self.worker_id, point.name, time.monotonic() - began, error
                )
            raise
        if not held:
            self.journal.over = Outcome.LEASE_LOST
            raise Stopped(Outcome.LEASE_LOST)
        self.journal.keep(point)
        await signals.astep_finished(self.attempt, self.worker_id, point.name, time.monotonic() - began, None)
        return point.result

    async def suspend(self, point: Checkpoint) -> None:
        """Commit the sleep or wait and let the job go."""
        held = await asyncio.shield(self.store.suspend(self.attempt, point))
        self.journal.over = Outcome.SUSPENDED if held else Outcome.LEASE_LOST
        raise Stopped(self.journal.over)

    async def woke(self, point: Checkpoint) -> None:
        """Record that the sleep ended."""
        done = dataclasses.replace(
            point, status="succeeded", attempt=self.attempt.number, ended=timezone.now()
        )
        if not await asyncio.shield(self.store.checkpoint(self.attempt, done)):
            self.journal.over = Outcome.LEASE_LOST
            raise Stopped(Outcome.LEASE_LOST)
        self.journal.keep(done)

    async def wait(self, point: Checkpoint) -> tuple[str, Any]:
        """Receive the event, record the timeout, or suspend the job."""
        state, payload = await asyncio.shield(self.store.wait_event(self.attempt, point))
        return _waited(self.journal, point, state, payload)


def stored(value: Any) -> Any:
    """A step's result as it is recorded and returned on every attempt: JSON, decoded again."""
    return json_value(value, "a step's result")  # as JSON gives it back: tuples become lists


def failed(point: Checkpoint, error: ErrorInfo) -> Checkpoint:
    """``point`` as a step that raised ``error``: it runs again on the job's next attempt."""
    return dataclasses.replace(
        point,
        status="failed",
        result=None,
        # No NUL: a database's text cannot hold one, and an exception's message may.
        error=f"{error.exception}: {error.message}".replace("\x00", "")[:10_000],
        ended=timezone.now(),
    )


def _waited(journal: Journal, point: Checkpoint, state: str, payload: Any) -> tuple[str, Any]:
    """What a wait's plan goes on with, once ``ops.wait_event`` ran."""
    if state == "lost":
        journal.over = Outcome.LEASE_LOST
        raise Stopped(Outcome.LEASE_LOST)
    if state == "waiting":
        journal.over = Outcome.SUSPENDED
        raise Stopped(Outcome.SUSPENDED)
    journal.keep(dataclasses.replace(point, status=state, result=payload))
    return state, payload


# A sync job's scribe: in its thread, in its transaction -----------------------------------


class StepScribe:
    """Carries out the plans of a sync job in its thread: ``bridge.JobThread`` makes one per attempt.

    ``segment`` is the job's transaction between two steps (``bridge.Segment``).
    """

    def __init__(self, thread: Any, attempt: Attempt, segment: Any) -> None:
        self.thread = thread
        self.attempt = attempt
        self.segment = segment
        self.journal = Journal(attempt, thread.worker_id)

    def _run(self, make: Callable[[Any], Op[R]]) -> R:
        return run(make, self.thread.alias)

    def load(self) -> dict[str, Checkpoint]:
        """The job's journal (read in the job's transaction)."""
        self.segment.check("a step")
        return self._run(lambda dialect: ops.read_steps(dialect, self.attempt.job_id))

    def replayed(self) -> None:
        """What the job wrote since its last step committed with this one before: roll it back."""
        self.segment.check("a step")
        self.segment.renew(commit=False)

    def run(
        self, point: Checkpoint, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``fn`` in the job's transaction, then the checkpoint, then commit; a failure rolls all back."""
        self.segment.check("a step")
        if current_job().cancel_requested:
            self.journal.over = Outcome.LEASE_LOST
            raise Stopped(Outcome.LEASE_LOST)
        worker = self.thread.worker_id
        signals.step_began(self.attempt, worker, point.name)
        began = time.monotonic()
        point.started = timezone.now()
        try:
            point.result = stored(fn(*args, **kwargs))
        except BaseException as exc:
            self.segment.renew(commit=False)
            error = ErrorInfo.from_exception(exc)
            if not isinstance(exc, Snooze):  # a snooze is not the step's failure: it runs again later
                self._record_failure(failed(point, error))
            signals.step_finished(self.attempt, worker, point.name, time.monotonic() - began, error)
            raise
        point.ended = timezone.now()
        self._commit(point)
        signals.step_finished(self.attempt, worker, point.name, time.monotonic() - began, None)
        return point.result

    def _commit(self, point: Checkpoint) -> None:
        """Write ``point`` under the job's fence and commit the job's transaction; Stopped if not held."""
        lease_end = timezone.now() + datetime.timedelta(seconds=self.thread.settings.lease_seconds)
        worker = self.thread.worker_id
        if not self._run(lambda dialect: ops.checkpoint(dialect, self.attempt, worker, point, lease_end)):
            self.segment.renew(commit=False)
            self.journal.over = Outcome.LEASE_LOST
            raise Stopped(Outcome.LEASE_LOST)
        self.segment.renew(commit=True)
        self.journal.keep(point)

    def _record_failure(self, point: Checkpoint) -> None:
        lease_end = timezone.now() + datetime.timedelta(seconds=self.thread.settings.lease_seconds)
        worker = self.thread.worker_id
        self._run(lambda dialect: ops.checkpoint(dialect, self.attempt, worker, point, lease_end))
        self.segment.renew(commit=True)

    def suspend(self, point: Checkpoint) -> None:
        """Commit the sleep or wait, with what the job wrote since its last step, and let the job go."""
        self.segment.check("a sleep")
        worker = self.thread.worker_id
        now = timezone.now()
        held: bool = self._run(lambda dialect: ops.suspend(dialect, self.attempt, worker, point, now))
        self.segment.end(commit=held)
        self.journal.over = Outcome.SUSPENDED if held else Outcome.LEASE_LOST
        raise Stopped(self.journal.over)

    def woke(self, point: Checkpoint) -> None:
        """Record that the sleep ended (its own transaction; writes since the last step roll back)."""
        self.segment.check("a sleep")
        self.segment.renew(commit=False)  # it committed with the sleep, when the sleep began
        self._commit(
            dataclasses.replace(point, status="succeeded", attempt=self.attempt.number, ended=timezone.now())
        )

    def wait(self, point: Checkpoint) -> tuple[str, Any]:
        """Receive the event, record the timeout, or suspend the job; commits each."""
        self.segment.check("a wait")
        worker = self.thread.worker_id
        now = timezone.now()
        lease_end = now + datetime.timedelta(seconds=self.thread.settings.lease_seconds)
        state: str
        payload: Any
        state, payload = self._run(
            lambda dialect: ops.wait_event(dialect, self.attempt, worker, point, now, lease_end)
        )
        if state == "waiting":
            self.segment.end(commit=True)
        elif state == "lost":
            self.segment.end(commit=False)
        else:
            self.segment.renew(commit=True)
        return _waited(self.journal, point, state, payload)
