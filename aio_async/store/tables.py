"""The queue's tables, as the statements name them (quoted as Django creates them)."""

from __future__ import annotations

__all__ = ["ATTEMPT", "DEPENDENCY", "ERROR", "EVENT", "GROUP", "JOB", "STEP"]

JOB = '"aio_async_job"'
DEPENDENCY = '"aio_async_dependency"'
ERROR = '"aio_async_error"'
GROUP = '"aio_async_group"'
ATTEMPT = '"aio_async_attempt"'
STEP = '"aio_async_step"'
EVENT = '"aio_async_event"'
