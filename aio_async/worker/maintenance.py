"""A worker's maintenance services: pruning finished jobs and firing periodic ticks.

Each runs on a thread of its own (one connection), beside the executor's loop, until the
worker stops; a failure is logged and tried again at the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import timezone

from aio_async.cron import PeriodicRunner
from aio_async.retention import Retention
from aio_async.schedules import Schedule
from aio_async.store.maintenance import prune_in_thread

__all__ = ["fire_periodic", "prune_every"]

logger = logging.getLogger("aio_async.executor")

#: A worker with periodic schedules looks at the clock at least this often (it may be changed).
PERIODIC_RECHECK = 60.0
PERIODIC_RETRY = 5.0


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if the worker stops."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def prune_every(retention: Retention, database: str, stop: asyncio.Event) -> None:
    """Delete old finished jobs now, then every ``retention.every`` seconds, until ``stop``."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aio-async-prune")
    run = sync_to_async(prune_in_thread, thread_sensitive=False, executor=pool)
    try:
        while not stop.is_set():
            try:
                counted = await run(retention, database, lambda: not stop.is_set())
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                logger.warning(
                    "prune failed: %s: %s", type(exc).__name__, exc, extra={"action": "prune_failed"}
                )
            else:
                if any(counted.values()):
                    logger.info("Pruned finished jobs: %s", counted, extra={"action": "pruned", **counted})
            await _pause(stop, retention.every)
    finally:
        pool.shutdown(wait=False)


async def fire_periodic(
    found: list[Schedule], database: str, stop: asyncio.Event, made_jobs: Callable[[], None]
) -> None:
    """Fire the schedules' ticks as they come due until ``stop``; ``made_jobs()`` after a tick made some."""
    runner = PeriodicRunner(found, database)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aio-async-periodic")
    on_thread = sync_to_async(thread_sensitive=False, executor=pool)
    started = False
    try:
        while not stop.is_set():
            try:
                if started:
                    made = await on_thread(runner.due)(timezone.now())
                else:  # make up for missed ticks that replay, and plan the next ones
                    made = await on_thread(runner.start)(timezone.now())
                    started = True
                if made:
                    made_jobs()  # the jobs may be this worker's to run: no need to poll
            except Exception as exc:  # noqa: BLE001 - the database is away: try again
                logger.warning(
                    "periodic failed: %s: %s", type(exc).__name__, exc, extra={"action": "periodic_failed"}
                )
            wait = runner.seconds_to_next(timezone.now()) if started else PERIODIC_RETRY
            await _pause(stop, min(wait, PERIODIC_RECHECK))
    finally:
        await on_thread(connections.close_all)()
        pool.shutdown(wait=False)
