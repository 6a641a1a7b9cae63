"""The benchmark's jobs: the same shapes as the peers'."""

from __future__ import annotations

import asyncio
import os
import time

from aio_async import task


@task
def noop() -> None:
    """Do nothing (a sync job: its transaction holds only its completion)."""


@task
def noop_with(index: int) -> None:
    """Do nothing with an argument: scheduled with ``unique=True``, each index is a key of its own."""


@task
async def anoop() -> None:
    """Do nothing, as a coroutine."""


@task
async def asleep50() -> None:
    """Wait 50 ms on the loop."""
    await asyncio.sleep(0.05)


@task
def sleep50() -> None:
    """Block a thread for 50 ms."""
    time.sleep(0.05)


@task
def stamp(enqueued: float) -> None:
    """Append when the job was scheduled and when it started, for the pick-up latency."""
    started = time.time()
    with open(os.environ["BENCH_LAT_FILE"], "a") as out:
        out.write(f"{enqueued!r} {started!r}\n")


@task
async def astamp(enqueued: float) -> None:
    """``stamp`` as a coroutine, the shape of the peers' latency job."""
    started = time.time()
    with open(os.environ["BENCH_LAT_FILE"], "a") as out:  # noqa: ASYNC230 - one short line
        out.write(f"{enqueued!r} {started!r}\n")
