"""Exceptions raised by aio_async.

The hierarchy::

    AioAsyncError
    ├── ScheduleError                  schedule() refused its input; nothing was written
    │   ├── FunctionNotFound           the dotted path names no importable callable
    │   ├── NotCallable                the path resolves to something that cannot be called
    │   ├── TaskNotAllowed             the callable is outside the allow-list
    │   ├── InvalidArguments           args or kwargs are not JSON (or not a list / a dict)
    │   ├── InvalidOption              priority, max_attempts, queue, timeout, meta, run_after
    │   └── GroupClosed                the group already has a finished member
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
    "FunctionNotFound",
    "GroupClosed",
    "InvalidArguments",
    "InvalidOption",
    "JobCancelled",
    "JobFailure",
    "JobRefused",
    "NotCallable",
    "ResultNotJSON",
    "ScheduleError",
    "TaskNotAllowed",
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
