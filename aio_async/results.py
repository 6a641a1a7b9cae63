"""Waiting for a job's end: ``result()`` and ``aresult()``.

On PostgreSQL (psycopg 3) a waiter is woken by a NOTIFY: it records its wait in a table of
its own (``aio_async_waiter``, never the job's row, which a worker's claim would then skip),
and a trigger sends ``NOTIFY aio_async_done`` in the transaction that finishes a job someone
waits for, so the waiter wakes on commit (migration 0012). All the waiters of a process share
one listening connection per database (``store.results.Listener``, on a thread of its own):
the cost is one server connection per process that waits, opened on its first wait and kept,
however many wait at once. Without it (``AIO_ASYNC["LISTEN"] = False``, SQLite, psycopg2, or
when that connection cannot be had: too many clients, a pooler) waiters poll, from 10 ms up
to ``POLL_CAP`` between looks, on the connection Django gives the waiting thread. Either way
the job's row decides: a job that finished before the wait began is answered at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections

from aio_async.conf import get_settings
from aio_async.errors import InvalidOption, JobFailed, ResultTimeout
from aio_async.store.drivers.django import psycopg3
from aio_async.store.results import End, Listener, listener_for, look, register, unregister

__all__ = ["aresult", "result"]

#: Longest pause between two looks at a job when polling.
POLL_CAP = 0.5
#: A woken waiter looks again after this long without a notification, doubling up to
#: ``LOOK_CAP``: a job whose end was written just before the waiter registered sends no
#: NOTIFY, and a notification can be lost (a pooler, a lost connection); either delays the
#: answer, never loses it.
FIRST_LOOK = 0.05
LOOK_CAP = 5.0


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
            if connection.vendor == "postgresql" and psycopg3() and listen is not False:
                listener = listener_for(connections[listen] if isinstance(listen, str) else connection)
                end = await _woken(listener, job_id, alias)
                if end is not None:
                    return _answer(job_id, *end)
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
        return value
    exception, message, traceback = error or ("", "", "")
    raise JobFailed(job_id, status, exception, message, traceback)


async def _woken(listener: Listener, job_id: int, alias: str) -> End | None:
    """The job's end, looked at each time the listener may have heard of it; None: poll instead."""
    wake = listener.wake(job_id)
    try:
        if not await listener.ready():
            return None
        waiter, end = await sync_to_async(register, thread_sensitive=True)(job_id, alias)
        try:
            pause = FIRST_LOOK
            while end is None:
                try:
                    async with asyncio.timeout(pause):
                        await wake.event.wait()
                except TimeoutError:
                    pause = min(LOOK_CAP, pause * 2)
                wake.event.clear()  # before the look: a notice that comes during it wakes the next wait
                if not await listener.ready():
                    return None
                end = await sync_to_async(look, thread_sensitive=True)(job_id, alias)
            return end
        finally:
            await sync_to_async(unregister, thread_sensitive=True)(job_id, waiter, alias)
    finally:
        listener.forget(wake)


async def _poll(job_id: int, alias: str) -> Any:
    look_now = sync_to_async(look, thread_sensitive=True)
    pause = 0.01
    while True:
        found = await look_now(job_id, alias)
        if found is not None:
            return _answer(job_id, *found)
        await asyncio.sleep(pause)
        pause = min(POLL_CAP, pause * 2)
