"""Exceptions raised by aio_async.

The hierarchy::

    AioAsyncError
    ├── ScheduleError                  schedule() refused its input; nothing was written
    │   ├── FunctionNotFound           the dotted path names no importable callable
    │   ├── NotCallable                the path resolves to something that cannot be called
    │   ├── TaskNotAllowed             the callable is outside the allow-list
    │   │   └── TaskNotImported        a task registered here that no worker imports
    │   ├── InvalidArguments           args or kwargs are not JSON (or not a list / a dict)
    │   ├── InvalidOption              priority, max_attempts, queue, timeout, meta, run_after
    │   └── GroupClosed                the group already has a finished member
    ├── Snooze                         raised by a job: run me again later, no attempt used
    ├── JobFailed                      result(): the job failed for good or was cancelled
    ├── ResultTimeout                  result(): the job did not finish in time (a TimeoutError)
    └── JobFailure                     recorded as an Error row by the worker
        ├── ResultNotJSON              the job returned a value that is not JSON
        ├── JobRefused                 the row cannot run: a callable that is not allowed,
        │                              arguments that do not decode or do not fit
        └── WorkerLost                 the job's worker stopped renewing its lease (killed,
                                       crashed, stalled) while the job ran
"""

from __future__ import annotations

__all__ = [
    "AioAsyncError",
    "EventTimeout",
    "FunctionNotFound",
    "GroupClosed",
    "InvalidArguments",
    "InvalidOption",
    "JobCancelled",
    "JobFailed",
    "JobFailure",
    "JobRefused",
    "NotCallable",
    "ResultNotJSON",
    "ResultTimeout",
    "ScheduleError",
    "Snooze",
    "StepError",
    "StepsChanged",
    "TaskNotAllowed",
    "TaskNotImported",
    "WorkerLost",
]


class AioAsyncError(Exception):
    """Root of every exception aio_async raises."""


class ScheduleError(AioAsyncError, ValueError):
    """schedule() refused its input; no row was written."""


class FunctionNotFound(ScheduleError):
    """The dotted path names no importable module or attribute."""


class NotCallable(ScheduleError):
    """The dotted path resolves to an object that cannot be called."""


class TaskNotAllowed(ScheduleError):
    """The callable is neither a registered task nor under an allowed module."""


class TaskNotImported(TaskNotAllowed):
    """A task registered in this process that a worker would not find, so would refuse.

    A worker registers the tasks that Django's set-up imports (each installed app's ``tasks``
    module, and what those import) and imports only modules under ``ALLOWED_MODULES``; a task
    defined elsewhere (the project package, a top-level module) is known only to the process
    that imported it.
    """


class InvalidArguments(ScheduleError):
    """args must be a list or tuple and kwargs a dict with str keys, all JSON."""


class InvalidOption(ScheduleError):
    """An option (priority, max_attempts, queue, timeout, meta, run_after) is invalid."""


class GroupClosed(ScheduleError):
    """The group already has a finished member, so it takes no new one."""


class JobFailure(AioAsyncError):
    """A job failed for a reason of aio_async's own; stored in its Error row."""


class ResultNotJSON(JobFailure):
    """The job returned a value that cannot be stored as JSON."""


class JobRefused(JobFailure):
    """The worker refused to run the row: its callable, arguments or options cannot run."""


class WorkerLost(JobFailure):
    """The job's worker stopped renewing its lease while the job ran; another worker rescued it."""


class JobCancelled(JobFailure):
    """The job was cancelled (``deschedule()``, the admin's action) before it could run again."""


class JobFailed(AioAsyncError):
    """``result()`` of a job that failed for good or was cancelled: its last recorded error."""

    def __init__(
        self, job_id: int, status: str, exception: str, error_message: str, error_traceback: str
    ) -> None:
        cause = f"{exception}: {error_message}" if exception else "no error was recorded"
        super().__init__(f"job {job_id} {status} ({cause})")
        self.job_id = job_id
        self.status = status
        #: The dotted path of the last error's exception, as its Error row records it.
        self.exception = exception
        self.error_message = error_message
        self.error_traceback = error_traceback


class ResultTimeout(AioAsyncError, TimeoutError):
    """``result()`` gave up waiting; the job is left as it is and may still finish."""


class Snooze(AioAsyncError):
    """Raise from a job to run it again after ``seconds``, without using up an attempt.

    A sync job's work rolls back, as for any exception; no Error row is written, and the
    job's ``meta["snoozed"]`` counts its snoozes.
    """

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < 10**9:
            raise ValueError(f"Snooze takes a number of seconds from 0, got {seconds!r:.80}")
        super().__init__(f"snoozed for {seconds:g} s")
        self.seconds = float(seconds)


class StepError(AioAsyncError):
    """A durable step, sleep or wait was used where it cannot keep its promise, or named twice.

    Raised inside the job: outside a job run by a worker, inside ``transaction.atomic()`` (a
    step commits), from the wrong kind of job (``step()`` in a coroutine job: ``astep()``), or
    with a name this attempt already used.
    """


class StepsChanged(StepError):
    """The job's code no longer reaches steps that an earlier attempt recorded, before it runs new ones.

    A deploy that renamed or removed a step met a job in flight. Nothing new ran: the attempt
    fails (and is retried by the job's policy), so that code that reaches the recorded steps
    again, or ``forget_steps()``, lets the job go on.
    """


class EventTimeout(AioAsyncError, TimeoutError):
    """``wait_for()`` ended at its timeout without the event; raised again on every later attempt.

    Not caught, it fails the job for good: a recorded timeout cannot end otherwise.
    """
