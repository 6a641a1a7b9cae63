"""Reading a job's end for ``result()``: by looking, or woken by a NOTIFY (PostgreSQL).

A waiter records its wait in ``aio_async_waiter``, a row of its own and never the job's (a
lock on a queued job's row would make a worker's claim skip the job); a trigger sends
``NOTIFY aio_async_done, '<id>'`` in the transaction that finishes a job someone waits for,
delivered on commit (migration 0012). The waiter removes its row when its wait ends.

One ``Listener`` per process and database LISTENs for every waiter of the process, on a
connection, a thread and an event loop of its own, so that the waiters of every loop (an ASGI
server's, or the one ``async_to_sync`` makes for each sync ``result()``) share it. It connects
on the first wait, again after a lost connection, and when it cannot (too many clients, a
pooler) it says so once in the log and the waiters poll; it tries again after ``RETRY`` s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from aio_async.store.drivers.django import cursor

__all__ = [
    "CHANNEL",
    "RETRY",
    "End",
    "Listener",
    "Wake",
    "close_listeners",
    "listener_for",
    "look",
    "register",
    "unregister",
]

#: A job's end: its status (None: no such job), its result, its last error (or None).
End = tuple[str | None, Any, tuple[str, str, str] | None]

#: Where a trigger tells of the end of a job someone waits for.
CHANNEL = "aio_async_done"
#: Seconds after a failed connection before a listener tries again (meanwhile waiters poll).
RETRY = 30.0
_FINISHED = ("succeeded", "failed", "cancelled")

_STATE = 'SELECT status, result FROM "aio_async_job" WHERE id = %s'
_LAST_ERROR = (
    'SELECT exception, message, traceback FROM "aio_async_error" WHERE job_id = %s '
    "ORDER BY created DESC, id DESC LIMIT 1"
)
_REGISTER = 'INSERT INTO "aio_async_waiter" (job_id) VALUES (%s) RETURNING id'
_UNREGISTER = 'DELETE FROM "aio_async_waiter" WHERE job_id = %s AND id = %s'

logger = logging.getLogger("aio_async.results")


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


def register(job_id: int, alias: str) -> tuple[int, End | None]:
    """Record a wait for the job (PostgreSQL), then look at it: (the wait's id, the job's end or None).

    Registered before the look, a job that ends after the look sends its NOTIFY; one that
    ended before is seen by the look. The insert touches no row of the job's table.
    """
    with cursor(connections[alias]) as db:
        db.execute(_REGISTER, [job_id])
        (waiter,) = db.fetchone()
    return waiter, look(job_id, alias)


def unregister(job_id: int, waiter: int, alias: str) -> None:
    """Remove the wait's row: the job's end sends no NOTIFY for it any more."""
    with cursor(connections[alias]) as db:
        db.execute(_UNREGISTER, [job_id, waiter])


@dataclasses.dataclass(eq=False)
class Wake:
    """One waiter's wake-up: set, on the waiter's own loop, when its job may have ended."""

    job_id: int
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def set(self) -> None:
        """Set the event from any thread (a waiter whose loop has closed is gone: ignored)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.event.set)


class Listener:
    """The LISTEN on ``aio_async_done`` of every waiter of this process on one database."""

    def __init__(self, params: dict[str, Any], name: str) -> None:
        self._params = params
        self._name = name
        self._lock = threading.Lock()
        self._waiters: dict[int, set[Wake]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # On the listener's own loop only:
        self._task: asyncio.Task[None] | None = None
        self._up: asyncio.Future[bool] | None = None
        self._retry_at = 0.0
        self._said = False

    def wake(self, job_id: int) -> Wake:
        """A wake-up for a waiter of ``job_id`` on the running loop; ``forget`` it after."""
        wake = Wake(job_id, asyncio.get_running_loop())
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(wake)
        return wake

    def forget(self, wake: Wake) -> None:
        """The waiter is done."""
        with self._lock:
            waiting = self._waiters.get(wake.job_id, set())
            waiting.discard(wake)
            if not waiting:
                self._waiters.pop(wake.job_id, None)

    async def ready(self) -> bool:
        """Whether it LISTENs now, after connecting if it did not; False: poll."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._ready(), self._own_loop()))

    def close(self) -> None:
        """Stop listening and close the connection (the next wait connects again)."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name=f"aio_async-results-{self._name}", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    async def _ready(self) -> bool:
        if self._task is None or self._task.done():
            if time.monotonic() < self._retry_at:
                return False
            self._up = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._listen(self._up))
        assert self._up is not None
        return await asyncio.shield(self._up)

    async def _close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._retry_at = 0.0

    async def _listen(self, up: asyncio.Future[bool]) -> None:
        from aio_async.store.drivers.psycopg import notifications  # psycopg 3: an optional extra

        try:
            async for notice in notifications(self._params, (CHANNEL,)):
                if notice is None:
                    up.set_result(True)
                    self._said = False
                elif notice[1].isdigit():
                    self._wake(int(notice[1]))
        except Exception as exc:  # noqa: BLE001 - any failure to listen leaves the waiters polling
            if up.done():
                logger.info(
                    "Waiters' LISTEN connection lost (%s: %s); connecting again",
                    type(exc).__name__,
                    exc,
                    extra={"action": "results_listen_lost"},
                )
            else:
                self._retry_at = time.monotonic() + RETRY
                if not self._said:
                    self._said = True
                    logger.warning(
                        "result() waiters on database %r poll: no LISTEN connection (%s: %s); "
                        "trying again in %g s",
                        self._name,
                        type(exc).__name__,
                        exc,
                        RETRY,
                        extra={"action": "results_polling"},
                    )
        finally:
            if not up.done():
                up.set_result(False)
            self._wake_all()  # they look, then listen again (a new connection) or poll

    def _wake(self, job_id: int) -> None:
        with self._lock:
            waiting = list(self._waiters.get(job_id, ()))
        for wake in waiting:
            wake.set()

    def _wake_all(self) -> None:
        with self._lock:
            waiting = [wake for wakes in self._waiters.values() for wake in wakes]
        for wake in waiting:
            wake.set()


_listeners: dict[tuple[tuple[str, str], ...], Listener] = {}
_listeners_lock = threading.Lock()


def listener_for(connection: BaseDatabaseWrapper) -> Listener:
    """The process's listener on ``connection``'s database (made on first use)."""
    from aio_async.store.drivers.psycopg import connection_params  # psycopg 3: an optional extra

    params = connection_params(connection)
    key = tuple(sorted((name, repr(value)) for name, value in params.items()))
    with _listeners_lock:
        if key not in _listeners:
            _listeners[key] = Listener(params, connection.alias)
        return _listeners[key]


def close_listeners() -> None:
    """Close every listener's connection (tests, before their database is dropped)."""
    with _listeners_lock:
        listeners = list(_listeners.values())
    for listener in listeners:
        listener.close()
