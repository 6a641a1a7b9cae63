"""Value types at the ground: a job's attempt, how it ended, what its error was.

Plain data, importing nothing of the package but ``context``: logging, signals, metrics and
tracing read them without reaching the store, and the store, the bridge and the executor pass
them to each other.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import os
import re
import secrets
import socket
import traceback
from collections.abc import Sequence
from typing import Any

from aio_async.context import JobContext

__all__ = [
    "TIMED_OUT",
    "Attempt",
    "AttemptEnd",
    "Checkpoint",
    "ClaimRequest",
    "ErrorInfo",
    "Outcome",
    "WorkerId",
    "attempt_end",
    "class_path",
]


class Outcome(enum.Enum):
    """How one attempt of a job ended, for the worker that ran it."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    #: The attempt's lease was taken over: nothing it wrote was committed.
    LEASE_LOST = "lease_lost"
    #: Given back to the queue without using up an attempt (a clean stop).
    RELEASED = "released"
    #: The job raised Snooze: back in the queue for later, without using up an attempt.
    SNOOZED = "snoozed"
    #: The job was cancelled while it ran: a sync job's work rolled back; a coroutine job
    #: was stopped at its next await (what it wrote until then stays committed).
    CANCELLED = "cancelled"
    #: The job reached a durable sleep or a wait for an event (``aio_async.sleep``,
    #: ``aio_async.wait_for``): it left its worker, its attempt excused, and resumes later.
    SUSPENDED = "suspended"


class AttemptEnd(enum.StrEnum):
    """How one attempt of a job ended, as the job's attempt history records it."""

    SUCCEEDED = "succeeded"
    #: The job raised and was out of attempts (or could never run): it failed for good.
    FAILED = "failed"
    #: The job raised and was queued again, with back-off.
    RETRIED = "retried"
    #: The worker stopped renewing its lease (killed, crashed, stalled); another worker rescued the job.
    LOST = "lost"
    #: The job ran past its timeout and was stopped (then retried, or failed for good).
    TIMED_OUT = "timed_out"
    #: The job raised Snooze: back in the queue for later, the attempt excused.
    SNOOZED = "snoozed"
    #: Given back to the queue unfinished (a clean shutdown, no connection), the attempt excused.
    RELEASED = "released"
    #: Cancelled while it ran.
    CANCELLED = "cancelled"
    #: It reached a durable sleep or a wait for an event: the job waits, the attempt excused.
    SUSPENDED = "suspended"
    #: Still running.
    RUNNING = "running"


#: How the message of an attempt stopped at its timeout begins (its Error row's ``TimeoutError``).
TIMED_OUT = "the job ran past its timeout"
_WORKER_LOST = "aio_async.errors.WorkerLost"


def attempt_end(exception: str | None, message: str = "", *, gave_up: bool) -> AttemptEnd:
    """How an attempt that did not succeed ended, from its error (None: it raised nothing).

    ``gave_up``: the job failed for good with it; otherwise it went back to the queue.
    """
    if exception is None:
        return AttemptEnd.FAILED if gave_up else AttemptEnd.RELEASED
    if exception == _WORKER_LOST:
        return AttemptEnd.LOST
    if exception == "TimeoutError" and message.startswith(TIMED_OUT):
        return AttemptEnd.TIMED_OUT
    return AttemptEnd.FAILED if gave_up else AttemptEnd.RETRIED


_WORKER_ID = re.compile(r"(?P<host>.+):(?P<pid>[0-9]+):(?P<token>[0-9a-f]+)")


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerId:
    """A worker's id, ``host:pid:token``: the host it runs on, its process id and a random token.

    The token tells apart two workers that got the same pid on one host (a restart, a
    container). ``str()`` gives the text that job rows, Error rows and the attempt history hold.
    """

    host: str
    pid: int
    token: str

    @classmethod
    def new(cls) -> WorkerId:
        """The id of a new worker in this process: this host, this pid, a fresh token."""
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(3))

    @classmethod
    def parse(cls, text: str) -> WorkerId:
        """Read ``host:pid:token``; ValueError, saying what is wrong, for anything else."""
        found = _WORKER_ID.fullmatch(text)
        if found is None:
            raise ValueError(
                f"{text!r} is not a worker id: expected host:pid:token, a host name, a process id "
                "(digits) and a token (lower-case hex digits), separated by colons"
            )
        return cls(found["host"], int(found["pid"]), found["token"])

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"


def class_path(kind: type[BaseException]) -> str:
    """The dotted path an Error row names an exception class by (``aio_async.errors.WorkerLost``)."""
    return f"{kind.__module__}.{kind.__qualname__}"


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What an Error row records about one failed attempt."""

    exception: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture an exception's importable class path, message and full traceback."""
        kind = type(exc)
        name = (
            kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        )
        return cls(exception=name[:255], message=str(exc), traceback="".join(traceback.format_exception(exc)))

    @classmethod
    def of(cls, kind: type[BaseException], message: str) -> ErrorInfo:
        """An error of aio_async's own, with no traceback to show."""
        return cls(exception=class_path(kind), message=message, traceback="")


def _moment(value: object) -> datetime.datetime | None:
    """A timestamp as the database returned it (SQLite: ISO text in UTC), as an aware datetime."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if not isinstance(value, datetime.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


@dataclasses.dataclass(slots=True)
class Attempt:
    """One claim of a job: what a worker needs to run it and to fence what it writes.

    ``number`` is the job's attempt count after the claim; with the worker's id it is the
    fencing token that every write of this attempt carries.
    """

    job_id: int
    number: int
    name: str
    args: Any
    kwargs: Any
    queue: str = "default"
    priority: int = 5
    excused: int = 0
    max_attempts: int = 1
    timeout: float | None = None
    group_id: int | None = None
    isolated: bool = False
    started: datetime.datetime | None = None
    #: Why the row cannot be run at all (arguments that do not decode), or None.
    problem: str | None = None
    #: Jobs run after this one (known at the claim): its end settles them, in one transaction.
    has_dependents: bool = False
    #: The job's limit key, if it has limits: its end may leave room for another job of the key.
    limit_key: str | None = None
    #: When the job was due (its ``run_after``): where the claim found it in the queue.
    due: datetime.datetime | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any], started: datetime.datetime) -> Attempt:
        """An attempt from a claim's row (``sql.CLAIMED``); arguments decoded one row at a time.

        Arguments are read as text and decoded here, so that one row that cannot be decoded
        (nested too deep, say) is refused alone instead of failing the whole claim.
        """
        (
            job_id,
            name,
            args,
            kwargs,
            queue,
            priority,
            attempts,
            excused,
            max_attempts,
            timeout,
            group,
            isolated,
            has_dependents,
            limit_key,
            due,
        ) = row
        problem = None
        try:
            args = json.loads(args) if isinstance(args, str) else args
            kwargs = json.loads(kwargs) if isinstance(kwargs, str) else kwargs
        except (ValueError, RecursionError) as exc:
            args, kwargs = [], {}
            problem = f"its arguments cannot be decoded ({type(exc).__name__}: {str(exc)[:200]})"
        return cls(
            job_id, attempts, name, args, kwargs, queue, priority, excused, max_attempts, timeout, group,
            bool(isolated), started, problem, bool(has_dependents), limit_key, _moment(due),
        )  # fmt: skip

    @property
    def charged(self) -> int:
        """Attempts so far that count against ``max_attempts``, this one included."""
        return self.number - self.excused

    def context(self, worker_id: str) -> JobContext:
        """What ``aio_async.current_job()`` says inside this attempt's function."""
        return JobContext(
            self.job_id,
            self.name,
            self.queue,
            self.number,
            self.charged,
            self.max_attempts,
            worker_id,
            self.started,
        )


@dataclasses.dataclass(frozen=True)
class ClaimRequest:
    """What a worker claims: its queues (empty: every queue) and its name filters."""

    worker_id: str
    queues: tuple[str, ...]
    lease: datetime.timedelta
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclasses.dataclass(slots=True)
class Checkpoint:
    """One step of a job as its journal records it: a step, a durable sleep or a wait for an event.

    ``kind`` is ``step``, ``sleep`` or ``event``; ``status`` is ``succeeded`` (its ``result``,
    JSON, is returned from then on), ``failed`` (``error`` says why; it runs again), ``sleeping``
    (until ``until``), ``waiting`` (for an event with ``key``, until ``until`` if set) or
    ``timed_out`` (the wait ended without its event). ``attempt`` is the job's attempt that wrote it.
    """

    name: str
    position: int
    kind: str
    status: str
    attempt: int
    result: Any = None
    error: str = ""
    worker: str = ""
    started: datetime.datetime | None = None
    ended: datetime.datetime | None = None
    until: datetime.datetime | None = None
    key: str | None = None
    event_id: int | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Checkpoint:
        """A checkpoint from a journal read's row (``statements.STEP_COLUMNS``, its result as JSON text)."""
        name, position, kind, status, attempt, result, error, worker, started, ended, until, key, event = row
        decoded = None if result is None else json.loads(result)
        return cls(
            name, position, kind, status, attempt, decoded, error or "", worker or "", _moment(started),
            _moment(ended), _moment(until), key, event,
        )  # fmt: skip
