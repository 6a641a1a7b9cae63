"""Reading a job's end for ``result()``: by looking, or by LISTENing for it (PostgreSQL).

The waiter marks the job ``awaited``; a trigger then sends a NOTIFY in the transaction that
finishes it (migration 0007), delivered on commit.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import connections

from aio_async.store.drivers.django import cursor

__all__ = ["CHANNEL", "End", "listen_for_end", "look"]

#: A job's end: its status (None: no such job), its result, its last error (or None).
End = tuple[str | None, Any, tuple[str, str, str] | None]

#: Where a trigger tells of an awaited job's end.
CHANNEL = "aio_async_done"
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


async def listen_for_end(job_id: int, connection: Any) -> End:
    """LISTEN for the job's end on a connection of its own to ``connection``'s database; its end."""
    import psycopg  # psycopg 3 only: an optional extra

    from aio_async.store.drivers.psycopg import connection_params

    async with await psycopg.AsyncConnection.connect(**connection_params(connection), autocommit=True) as db:
        await db.execute(f"LISTEN {CHANNEL}")
        await db.execute(_AWAIT, [job_id])  # then look: a job that finished before is seen now
        while True:
            rows = await (await db.execute(_STATE_AS_TEXT, [job_id])).fetchall()
            status, value = rows[0] if rows else (None, None)
            if status is None or status in _FINISHED:
                error = await (await db.execute(_LAST_ERROR, [job_id])).fetchone() if status else None
                return status, json.loads(value) if isinstance(value, str) else value, error
            # Any awaited job's end, or a while without one: look again (a notification lost on
            # the way, through a pooler say, delays the answer, never loses it).
            async for _ in db.notifies(timeout=_LOOK_AGAIN, stop_after=1):
                pass


def look(job_id: int, alias: str) -> End | None:
    """The job's end (status, result, last error), or None while it has not finished."""
    with cursor(connections[alias]) as db:
        db.execute(_STATE, [job_id])
        row = db.fetchone()
        if row is None:
            return (None, None, None)
        status, value = row
        if status not in _FINISHED:
            return None
        db.execute(_LAST_ERROR, [job_id])
        error = db.fetchone()
    return status, json.loads(value) if isinstance(value, str) else value, error
