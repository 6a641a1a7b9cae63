"""Log records of jobs and workers, built in one place so that every line carries the same keys.

An attempt that ends as it should (``succeeded``, ``snoozed``, ``suspended``) is a DEBUG line: at thousands
of jobs a second a line each would cost the worker's one core, and the worker logs a summary
of its jobs at INFO instead (``worker_summary``). An attempt given back or cancelled is INFO;
a retry or a lost lease WARNING; a job failed for good ERROR.

Every record has ``extra={"action": ..., ...}``: a stable action name (``job_finished``,
``job_cancelled``, ``lease_lost``, ``claim_failed`` ...) that log pipelines can filter on. A
job's records also carry ``job_id``, ``job_name``, ``attempt`` and ``worker_id``; a finished
attempt (``job_finished``) adds ``outcome`` (``succeeded``, ``retrying``, ``failed``,
``released``, ``snoozed``, ``suspended``, ``cancelled``, ``lease_lost``) and ``duration``, and ``error`` (the
exception's class and message) when it failed. A job given back to the queue is a
``job_finished`` record whose outcome is ``released``.
"""

from __future__ import annotations

import logging
from typing import Any

from aio_async.values import Attempt, ErrorInfo, Outcome

__all__ = ["job_event", "job_finished", "jobs_logger"]

jobs_logger = logging.getLogger("aio_async.jobs")

_LEVELS = {
    Outcome.SUCCEEDED: logging.DEBUG,
    Outcome.RELEASED: logging.INFO,
    Outcome.SNOOZED: logging.DEBUG,
    Outcome.SUSPENDED: logging.DEBUG,
    Outcome.CANCELLED: logging.INFO,
    Outcome.RETRYING: logging.WARNING,
    Outcome.LEASE_LOST: logging.WARNING,
    Outcome.FAILED: logging.ERROR,
}
_WORDS = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.RELEASED: "released back to the queue, its attempt excused",
    Outcome.SNOOZED: "snoozed: back in the queue for later, its attempt excused",
    Outcome.SUSPENDED: "suspended: sleeping or waiting for an event, its attempt excused",
    Outcome.CANCELLED: (
        "stopped: it was cancelled while it ran (a sync job's work rolled back; a coroutine job's "
        "writes until its stop stay committed)"
    ),
    Outcome.RETRYING: "failed, to be retried",
    Outcome.LEASE_LOST: "lost its lease to another worker: nothing it wrote was committed",
    Outcome.FAILED: "failed for good",
}


def job_event(
    level: int, action: str, attempt: Attempt, worker_id: str, message: str, *args: Any, **extra: Any
) -> None:
    """Log ``message`` about ``attempt`` with the keys every job record carries."""
    if not jobs_logger.isEnabledFor(level):
        return
    jobs_logger.log(
        level,
        "Job %s (%s, attempt %s): " + message,
        attempt.job_id,
        attempt.name,
        attempt.number,
        *args,
        extra={
            "action": action,
            "job_id": attempt.job_id,
            "job_name": attempt.name,
            "attempt": attempt.number,
            "worker_id": worker_id,
            **extra,
        },
    )


def job_finished(
    attempt: Attempt, worker_id: str, outcome: Outcome, duration: float, error: ErrorInfo | None = None
) -> None:
    """One line per finished attempt, the same for sync and coroutine jobs."""
    level = _LEVELS[outcome]
    if not jobs_logger.isEnabledFor(level):
        return
    detail = f": {error.exception}: {error.message[:500]}" if error is not None else ""
    job_event(
        level,
        "job_finished",
        attempt,
        worker_id,
        "%s (%.3f s)%s",
        _WORDS[outcome],
        duration,
        detail,
        outcome=outcome.value,
        duration=round(duration, 6),
        error=None if error is None else f"{error.exception}: {error.message[:500]}",
    )
