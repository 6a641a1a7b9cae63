"""aio_async: an asyncio job queue for Django that keeps its jobs in your own database.

``schedule()`` writes a job inside the caller's transaction; ``python -m aio_async run``
runs it, its database work and its completion committed together.
"""

from __future__ import annotations

import typing as _typing

__all__ = [
    "AioAsyncError",
    "EventTimeout",
    "FunctionNotFound",
    "GroupClosed",
    "InvalidArguments",
    "InvalidOption",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobFailure",
    "JobOptions",
    "JobRefused",
    "NotCallable",
    "ResultNotJSON",
    "ResultTimeout",
    "ScheduleError",
    "ScheduleOptions",
    "Snooze",
    "StepError",
    "StepsChanged",
    "Task",
    "TaskNotAllowed",
    "TaskNotImported",
    "WorkerId",
    "WorkerLost",
    "acancel",
    "adeschedule",
    "ahealth",
    "anotify_event",
    "aresult",
    "aretry",
    "aschedule",
    "aschedule_many",
    "asleep",
    "astats",
    "astep",
    "await_for",
    "cancel",
    "current_job",
    "deschedule",
    "forget_steps",
    "health",
    "notify_event",
    "periodic",
    "result",
    "retry",
    "schedule",
    "schedule_many",
    "sleep",
    "stats",
    "step",
    "task",
    "wait_for",
]

__version__ = "0.1.0"

from aio_async.context import JobContext, current_job
from aio_async.errors import (
    AioAsyncError,
    EventTimeout,
    FunctionNotFound,
    GroupClosed,
    InvalidArguments,
    InvalidOption,
    JobCancelled,
    JobFailed,
    JobFailure,
    JobRefused,
    NotCallable,
    ResultNotJSON,
    ResultTimeout,
    ScheduleError,
    Snooze,
    StepError,
    StepsChanged,
    TaskNotAllowed,
    TaskNotImported,
    WorkerLost,
)
from aio_async.values import WorkerId

if _typing.TYPE_CHECKING:
    from aio_async.api import (
        ScheduleOptions,
        Task,
        acancel,
        adeschedule,
        aretry,
        aschedule,
        aschedule_many,
        cancel,
        deschedule,
        retry,
        schedule,
        schedule_many,
        task,
    )
    from aio_async.cron import periodic
    from aio_async.health_report import ahealth, health
    from aio_async.payload import JobOptions
    from aio_async.readmodel import astats, stats
    from aio_async.results import aresult, result
    from aio_async.steps import (
        anotify_event,
        asleep,
        astep,
        await_for,
        forget_steps,
        notify_event,
        sleep,
        step,
        wait_for,
    )

_LAZY = {
    "anotify_event": "aio_async.steps",
    "asleep": "aio_async.steps",
    "astep": "aio_async.steps",
    "await_for": "aio_async.steps",
    "forget_steps": "aio_async.steps",
    "notify_event": "aio_async.steps",
    "sleep": "aio_async.steps",
    "step": "aio_async.steps",
    "wait_for": "aio_async.steps",
    "JobOptions": "aio_async.payload",
    "ScheduleOptions": "aio_async.api",
    "Task": "aio_async.api",
    "acancel": "aio_async.api",
    "cancel": "aio_async.api",
    "adeschedule": "aio_async.api",
    "aschedule": "aio_async.api",
    "aschedule_many": "aio_async.api",
    "schedule_many": "aio_async.api",
    "deschedule": "aio_async.api",
    "retry": "aio_async.api",
    "aretry": "aio_async.api",
    "schedule": "aio_async.api",
    "task": "aio_async.api",
    "ahealth": "aio_async.health_report",
    "health": "aio_async.health_report",
    "periodic": "aio_async.cron",
    "astats": "aio_async.readmodel",
    "stats": "aio_async.readmodel",
    "aresult": "aio_async.results",
    "result": "aio_async.results",
}


def __getattr__(name: str) -> _typing.Any:
    """Import the API on first use, so that ``import aio_async`` works before Django is set up."""
    if name in _LAZY:
        import importlib

        from aio_async.apps import require_installed

        require_installed()  # a clear error, not the models' RuntimeError

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aio_async' has no attribute {name!r}")
