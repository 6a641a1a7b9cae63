"""The job a piece of code runs in: ``aio_async.current_job()``, inside a job's function."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import threading

__all__ = ["JobContext", "current_job"]


@dataclasses.dataclass(frozen=True)
class JobContext:
    """The attempt that is running: which job, which attempt, on which worker."""

    job_id: int
    name: str
    queue: str
    #: This attempt's number: 1 for the first, and so on (excused attempts included).
    attempt: int
    #: Attempts that count against ``max_attempts``, this one included.
    charged: int
    max_attempts: int
    worker_id: str
    started: datetime.datetime | None
    _cancelled: threading.Event = dataclasses.field(
        default_factory=threading.Event, repr=False, compare=False
    )

    @property
    def last_attempt(self) -> bool:
        """True when a failure of this attempt fails the job for good."""
        return self.charged >= self.max_attempts

    @property
    def cancel_requested(self) -> bool:
        """True once the job was cancelled (``cancel()``) while it runs: stop, nothing more commits.

        A coroutine job is cancelled on its worker anyway; a sync job, whose thread cannot be
        stopped, should look at this between steps of long work and return.
        """
        return self._cancelled.is_set()

    def request_cancel(self) -> None:
        """Set ``cancel_requested`` (the worker does, when it learns of the cancellation)."""
        self._cancelled.set()


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("aio_async_job", default=None)


def current_job() -> JobContext:
    """The running job's context; LookupError outside a job's function."""
    found = _current.get()
    if found is None:
        raise LookupError("current_job() is only known inside a job's function, run by a worker")
    return found


def enter(context: JobContext) -> contextvars.Token[JobContext | None]:
    """Make ``context`` the current job (in this task or thread's context)."""
    return _current.set(context)


def reset(token: contextvars.Token[JobContext | None]) -> None:
    """Undo ``enter``."""
    _current.reset(token)
