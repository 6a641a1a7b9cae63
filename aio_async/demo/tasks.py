"""The demo's tasks: a sync job that writes, a coroutine, and one that fails twice."""

from __future__ import annotations

import asyncio
import collections

from aio_async.api import task
from aio_async.demo.models import Note

_calls: collections.Counter[str] = collections.Counter()


@task
def write_note(text: str) -> int:
    """Write a Note; the row and the job's completion commit together."""
    return Note.objects.create(text=text).pk


@task
async def greet(name: str) -> str:
    """A coroutine job, awaited on the worker's loop."""
    await asyncio.sleep(0.05)
    return f"hello, {name}"


@task(max_attempts=5)
def flaky(key: str) -> str:
    """Fail on the first two calls (in this process), then succeed."""
    _calls[key] += 1
    if _calls[key] <= 2:
        raise ConnectionError(f"the remote service is down (call {_calls[key]})")
    return f"{key} worked on call {_calls[key]}"
