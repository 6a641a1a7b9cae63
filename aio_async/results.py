"""Waiting for a job's end: ``result()`` and ``aresult()``.

The waiter marks the job ``awaited``; on PostgreSQL (psycopg 3) it LISTENs first, so the
NOTIFY that a trigger sends in the transaction that finishes the job wakes it on commit
(migration 0007). Elsewhere it polls, from 10 ms up to ``POLL_CAP`` between looks. Either
way the job's row decides: a job that finished before the wait began is answered at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections

from aio_async import sql
from aio_async.conf import get_settings
from aio_async.errors import InvalidOption, JobFailed, ResultTimeout

__all__ = ["aresult", "result"]

CHANNEL = "aio_async_done"
POLL_CAP = 0.5
_FINISHED = ("succeeded", "failed", "cancelled")

_STATE = 'SELECT status, result FROM "aio_async_job" WHERE id = %s'
#: Seconds between looks at an awaited job's state when no notification came.
_LOOK_AGAIN = 5.0
_STATE_AS_TEXT = 'SELECT status, result::text FROM "aio_async_job" WHERE id = %s'  # psycopg: no decoding
_LAST_ERROR = (
    'SELECT exception, message, traceback FROM "aio_async_error" WHERE job_id = %s '
    "ORDER BY created DESC, id DESC LIMIT 1"
)
_AWAIT = 'UPDATE "aio_async_job" SET awaited = TRUE WHERE id = %s AND NOT awaited'


async def aresult(job: Any, timeout: float | None = None, *, using: str | None = None) -> Any:  # noqa: ASYNC109 - as result()
    """Wait for the job (a Job or its id) to finish; its result, or JobFailed, or ResultTimeout."""
    job_id = _job_id(job)
    alias = using or getattr(getattr(job, "_state", None), "db", None) or get_settings().database
    if alias not in connections:
        raise InvalidOption(f"using={alias!r} is not a database alias of DATABASES")
    await sync_to_async(_outside_transactions, thread_sensitive=True)(alias)
    try:
        async with asyncio.timeout(timeout):
            connection = connections[alias]
            listen = get_settings().listen
            if connection.vendor == "postgresql" and sql.psycopg3() and listen is not False:
                return await _listen(job_id, connections[listen] if isinstance(listen, str) else connection)
            return await _poll(job_id, alias)
    except TimeoutError:
        raise ResultTimeout(
            f"job {job_id} did not finish within {timeout:g} s; it was left as it is"
        ) from None


def result(job: Any, timeout: float | None = None, *, using: str | None = None) -> Any:
    """Wait for the job (a Job or its id) to finish; its result, or JobFailed, or ResultTimeout."""
    return async_to_sync(aresult)(job, timeout, using=using)


def _job_id(job: Any) -> int:
    job_id = getattr(job, "pk", job)
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise InvalidOption(f"result() takes a Job or a job id, got {job!r:.80}")
    return job_id


def _outside_transactions(alias: str) -> None:
    """Refuse a wait inside a transaction: the job cannot even start before it commits."""
    if connections[alias].in_atomic_block:
        raise InvalidOption(
            "result() was called inside transaction.atomic(): a job scheduled there cannot start "
            "before the transaction commits, and the wait would hold it open; wait after it"
        )


def _answer(job_id: int, status: str | None, value: Any, error: tuple[str, str, str] | None) -> Any:
    if status is None:
        raise InvalidOption(f"job {job_id} does not exist (deleted, or never committed)")
    if status == "succeeded":
        return json.loads(value) if isinstance(value, str) else value
    exception, message, traceback = error or ("", "", "")
    raise JobFailed(job_id, status, exception, message, traceback)


async def _listen(job_id: int, connection: Any) -> Any:
    import psycopg

    from aio_async.postgres import connection_params

    async with await psycopg.AsyncConnection.connect(**connection_params(connection), autocommit=True) as db:
        await db.execute(f"LISTEN {CHANNEL}")
        await db.execute(_AWAIT, [job_id])  # then look: a job that finished before is seen now
        while True:
            rows = await (await db.execute(_STATE_AS_TEXT, [job_id])).fetchall()
            status, value = rows[0] if rows else (None, None)
            if status is None or status in _FINISHED:
                error = await (await db.execute(_LAST_ERROR, [job_id])).fetchone() if status else None
                return _answer(job_id, status, value, error)
            # Any awaited job's end, or a while without one: look again (a notification lost on
            # the way, through a pooler say, delays the answer, never loses it).
            async for _ in db.notifies(timeout=_LOOK_AGAIN, stop_after=1):
                pass


async def _poll(job_id: int, alias: str) -> Any:
    look = sync_to_async(_look, thread_sensitive=True)
    pause = 0.01
    while True:
        found = await look(job_id, alias)
        if found is not None:
            return _answer(job_id, *found)
        await asyncio.sleep(pause)
        pause = min(POLL_CAP, pause * 2)


def _look(job_id: int, alias: str) -> tuple[str | None, Any, tuple[str, str, str] | None] | None:
    """The job's end (status, result, last error), or None while it has not finished."""
    with connections[alias].cursor() as cursor:
        cursor.execute(_STATE, [job_id])
        row = cursor.fetchone()
        if row is None:
            return (None, None, None)
        status, value = row
        if status not in _FINISHED:
            return None
        cursor.execute(_LAST_ERROR, [job_id])
        error = cursor.fetchone()
    return status, value, error
