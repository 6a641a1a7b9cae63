"""Jobs for the tests: each does one observable thing."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from os import system  # noqa: F401 - the allow-list test names tests.app.tasks.system
from pathlib import Path

from aio_async import Snooze, current_job, task
from tests.app.models import Record


def write(key: str, value: int = 0) -> int:
    """Write a Record and return its id (a plain function, allowed by its module)."""
    return Record.objects.create(key=key, value=value).pk


def write_then_fail(key: str) -> None:
    """Write a Record, then raise: the Record must roll back."""
    Record.objects.create(key=key)
    raise ValueError(f"failing after writing {key}")


def write_then_return_set(key: str) -> set[int]:
    """Write a Record and return a value JSON cannot hold."""
    Record.objects.create(key=key)
    return {1, 2}


def write_then_exit(key: str) -> None:
    """Write a Record and raise SystemExit, which must not stop the worker."""
    Record.objects.create(key=key)
    sys.exit(3)


def keyboard_interrupt() -> None:
    """Raise KeyboardInterrupt from inside a job."""
    raise KeyboardInterrupt


def add(a: int, b: int) -> int:
    """Return a + b."""
    return a + b


def sleep_then_write(key: str, seconds: float) -> int:
    """Block a thread for ``seconds``, then write."""
    time.sleep(seconds)
    return Record.objects.create(key=key).pk


def record_pid(key: str) -> int:
    """Write the worker's pid."""
    return Record.objects.create(key=key, value=os.getpid()).pk


async def awrite(key: str) -> int:
    """A coroutine job that writes through Django's async ORM."""
    await asyncio.sleep(0.01)
    record = await Record.objects.acreate(key=key)
    return record.pk


async def asleep(seconds: float) -> float:
    """A coroutine job that sleeps."""
    await asyncio.sleep(seconds)
    return seconds


async def afail(message: str) -> None:
    """A coroutine job that raises."""
    raise RuntimeError(message)


class Maths:
    """Class methods can be jobs too."""

    @classmethod
    def double(cls, value: int) -> int:
        """Return 2 × value."""
        return 2 * value


NOT_CALLABLE = 42


@task(queue="tasks", priority=7, max_attempts=2)
def decorated(key: str) -> int:
    """A registered task with its own options."""
    return Record.objects.create(key=key).pk


@task
async def adecorated(key: str) -> str:
    """A registered coroutine task."""
    await Record.objects.acreate(key=key)
    return key


def write_after(key: str, seconds: float) -> int:
    """Sleep, then write a Record (a job that can overrun its timeout)."""
    time.sleep(seconds)
    return Record.objects.create(key=key).pk


def mark_then_sleep(key: str, seconds: float, marker: str) -> int:
    """Create ``marker`` (the job has really started), sleep, then write a Record."""
    Path(marker).touch()
    time.sleep(seconds)
    return Record.objects.create(key=key).pk


def crash(key: str) -> None:
    """End the worker's process at once, as a crash in a C extension would."""
    Record.objects.create(key=key)  # never committed: the process dies inside the transaction
    os._exit(3)


def mark_pid_then_sleep(key: str, seconds: float, folder: str) -> int:
    """Leave a file named after ``key`` holding this process's pid (the job really started), sleep, write."""
    Path(folder, key).write_text(str(os.getpid()))
    time.sleep(seconds)
    return Record.objects.create(key=key, value=os.getpid()).pk


async def amark_pid_then_sleep(key: str, seconds: float, folder: str) -> int:
    """mark_pid_then_sleep as a coroutine job."""
    Path(folder, key).write_text(str(os.getpid()))  # noqa: ASYNC240 - a few bytes, once
    await asyncio.sleep(seconds)
    record = await Record.objects.acreate(key=key, value=os.getpid())
    return record.pk


@task(priority=0)
def lowest(key: str) -> str:
    """A task whose own priority is 0, which must not read as "unset"."""
    return key


def whoami() -> dict[str, object]:
    """What current_job() says inside a sync job."""
    job = current_job()
    return {"id": job.job_id, "attempt": job.attempt, "worker": job.worker_id, "last": job.last_attempt}


async def awhoami() -> dict[str, object]:
    """What current_job() says inside a coroutine job."""
    return whoami()


def snooze_then_write(key: str, times: int, seconds: float = 0) -> int:
    """Write, then snooze (the write rolls back) until snoozed ``times`` times; then keep the write."""
    attempt = current_job().attempt
    Record.objects.create(key=f"{key}-{attempt}")
    if attempt <= times:
        raise Snooze(seconds)
    return attempt


async def asnooze(times: int) -> int:
    """``snooze_then_write`` as a coroutine, without the write."""
    attempt = current_job().attempt
    if attempt <= times:
        raise Snooze(0)
    return attempt


async def await_cancel(key: str) -> str:
    """Write a Record (committed at once), then wait a minute: cancelling it is the way out."""
    from asgiref.sync import sync_to_async

    await sync_to_async(write)(key)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await sync_to_async(write)(f"{key}-stopped")
        raise
    return "not cancelled"


def write_until_cancelled(key: str, marker: str, *, write_first: bool = True) -> str:
    """Write, wait for cancel_requested, create ``marker``, write again: all in the job's transaction.

    Without ``write_first`` the job writes only once cancelled.
    """
    if write_first:
        write(key)
    deadline = time.monotonic() + 30
    while not current_job().cancel_requested:
        if time.monotonic() > deadline:
            return "not cancelled"
        time.sleep(0.01)
    Path(marker).touch()
    write(f"{key}-after")
    return "stopped"


@task(concurrency_key=lambda customer, seconds: f"customer:{customer}", concurrency_limit=1)
async def sync_customer(customer: str, seconds: float) -> str:
    """One customer's jobs run one at a time (their key is made from the arguments)."""
    await asyncio.sleep(seconds)
    return customer


@task(concurrency_key="shared", concurrency_limit=3, rate="10/m")
def limited(n: int) -> int:
    """A task with limits of its own."""
    return n


def timed_sleep(seconds: float) -> list[float]:
    """Sleep; return when the function began and ended (wall clock), as the job's result."""
    began = time.time()
    time.sleep(seconds)
    return [began, time.time()]


def read_then_write(key: str) -> int:
    """Read the Records, then write one: a deferred SQLite transaction's lock upgrade."""
    seen = Record.objects.filter(key=key).count()
    return Record.objects.create(key=key, value=seen).pk


def fail_until(attempt: int) -> int:
    """Raise until the job's ``attempt``-th attempt, which returns its number."""
    now = current_job().attempt
    if now < attempt:
        raise ValueError(f"attempt {now} fails")
    return now


async def aslow(seconds: float) -> float:
    """A coroutine job that sleeps (to be stopped at its timeout)."""
    await asyncio.sleep(seconds)
    return seconds
