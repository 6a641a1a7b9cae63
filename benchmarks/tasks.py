"""The benchmark's jobs: the peers' shapes, and those of the steps and suspended families."""

from __future__ import annotations

import asyncio
import os
import time

from aio_async import astep, current_job, step, task, wait_for

#: The steps of the steps family's jobs: five, so that N/5 jobs make N steps.
STEPS = ("one", "two", "three", "four", "five")


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


def nothing() -> None:
    """Do nothing, as a step: what a step costs is then its transaction and its checkpoint."""


async def anothing() -> None:
    """``nothing`` as a coroutine: awaited on the loop, then its checkpoint is written."""


@task
def five_steps() -> None:
    """Five no-op steps, each committed with its checkpoint under the job's fence."""
    for name in STEPS:
        step(name, nothing)


@task
async def afive_steps() -> None:
    """``five_steps`` as a coroutine job: five ``astep`` of a coroutine no-op."""
    for name in STEPS:
        await astep(name, anothing)


@task
def wait_forever() -> None:
    """Wait for an event no one sends, without a timeout: the job stays suspended."""
    wait_for("never", f"bench-never-{current_job().job_id}")
