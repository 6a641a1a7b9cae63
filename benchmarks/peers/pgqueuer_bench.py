"""pgqueuer 1.6 peer benchmark: drain async no-op jobs at concurrency 10 on PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import asyncpg  # noqa: E402
from _common import (  # noqa: E402
    banner,
    execute,
    fetchone,
    measure_drain,
    parse_args,
    py_version,
    record,
    scalar,
    spawn,
    wanted,
)
from pgqueuer.db import AsyncpgDriver  # noqa: E402
from pgqueuer.queries import Queries  # noqa: E402

SYSTEM = "pgqueuer"
VERSION = f"pgqueuer {version('pgqueuer')}, asyncpg {version('asyncpg')}, py {py_version()}"
CONFIG = "default"
#: pgqueuer requires max_concurrent_tasks >= 2 x batch_size: at concurrency 10, batches of 5.
BATCH = 5
SETTINGS = (
    "PgQueuer(AsyncpgDriver(asyncpg.connect(DSN))), schema installed with its defaults (durable tables); "
    "worker: pgqueuer.run('pgqueuer_app:main', max_concurrent_tasks=N, batch_size=N // 2) in its "
    "default continuous mode (LISTEN/NOTIFY), what `pgq run` calls"
)


def reset(dsn: str) -> None:
    """Empty pgqueuer's queue and log tables."""
    execute(dsn, "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")


def remaining(dsn: str) -> int:
    """Count jobs not finished yet (pgqueuer deletes a job's row when it logs its end)."""
    return int(scalar(dsn, "SELECT count(*) FROM pgqueuer"))


def window(dsn: str) -> tuple[Any, ...]:
    """Return (first pick, last success, successes) from pgqueuer's own log table."""
    return fetchone(
        dsn,
        "SELECT extract(epoch FROM min(created) FILTER (WHERE status = 'picked')),"
        " extract(epoch FROM max(created) FILTER (WHERE status = 'successful')),"
        " count(*) FILTER (WHERE status = 'successful') FROM pgqueuer_log",
    )


async def _install(dsn: str) -> None:
    """Install pgqueuer's schema with its defaults, unless it is there."""
    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(connection))
        if not await queries.schema_is_installed():
            await queries.install()
    finally:
        await connection.close()


async def _prefill(dsn: str, count: int) -> None:
    """Enqueue ``count`` no-op jobs, 5,000 a statement (not timed)."""
    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(connection))
        for start in range(0, count, 5000):
            size = min(5000, count - start)
            await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
    finally:
        await connection.close()


def worker(dsn: str, concurrency: int) -> Callable[[str], subprocess.Popen[bytes]]:
    """Return a function that spawns a pgqueuer worker at this concurrency, logging to its argument."""
    code = (
        "import asyncio, pgqueuer; "
        f"asyncio.run(pgqueuer.run('pgqueuer_app:main', max_concurrent_tasks={concurrency}, "
        f"batch_size={max(1, concurrency // 2)}))"
    )

    def start(log: str) -> subprocess.Popen[bytes]:
        """Spawn the worker, logging to log."""
        return spawn([sys.executable, "-c", code], log, {"PYTHONPATH": HERE, "BENCH_PG_DSN": dsn}, HERE)

    return start


def main() -> None:
    """Run the drain and append its figures to --out."""
    args = parse_args(__doc__ or "")
    dsn, only, n = args.dsn, args.only, args.n
    asyncio.run(_install(dsn))
    keys = ("drain_async_c10", "drain_noop_c10")
    if not wanted(only, *keys):
        return
    banner("pgqueuer drain concurrency=10")
    steady, from_spawn = measure_drain(
        args,
        "pgqueuer-drain-c10",
        n,
        lambda: reset(dsn),
        lambda count: asyncio.run(_prefill(dsn, count)),
        lambda: remaining(dsn),
        lambda: window(dsn),
        worker(dsn, 10),
    )
    extra = {
        "n": n,
        "concurrency": 10,
        "batch_size": BATCH,
        "task": "async def noop",
        "spawn_to_done": round(statistics.median(from_spawn), 3),
        "spawn_to_done_runs": [round(x, 3) for x in from_spawn],
    }
    # The no-op is `async def`: the coroutine drain, also shown beside the sync drain as
    # procrastinate's is.
    for index, key in enumerate(keys):
        if wanted(only, key):
            more = {"same_as": keys[0]} if index else {}
            record(args.out, SYSTEM, VERSION, key, "jobs/s", steady, {**extra, **more}, CONFIG, SETTINGS)


if __name__ == "__main__":
    main()
