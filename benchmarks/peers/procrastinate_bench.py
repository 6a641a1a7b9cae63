"""procrastinate 3.x peer benchmark: enqueue, drain, I/O-bound and pick-up latency on PostgreSQL."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import (  # noqa: E402
    banner,
    emit_latency,
    execute,
    fetchone,
    measure_drain,
    measure_latency,
    parse_args,
    py_version,
    record,
    scalar,
    spawn,
    wanted,
)

SYSTEM = "procrastinate"
VERSION = (
    f"procrastinate {version('procrastinate')}, psycopg {version('psycopg')}, "
    f"psycopg-pool {version('psycopg-pool')}, py {py_version()}"
)
#: procrastinate's documented defaults: nothing set but the connection string.
CONFIG = "default"
SETTINGS = (
    "App(connector=PsycopgConnector(conninfo=DSN)), nothing else set: a psycopg_pool connection pool "
    "(AsyncConnectionPool in the worker, ConnectionPool for sync defer()), psycopg's prepare_threshold 5 "
    "(statements bound on the server, prepared from their fifth run); worker: procrastinate worker "
    "with its defaults (LISTEN/NOTIFY, 5 s polling) and --concurrency N for the drains "
    "(latency: no option, so concurrency 1)"
)


def reset(dsn: str) -> None:
    """Empty procrastinate's tables."""
    execute(
        dsn,
        "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers "
        "RESTART IDENTITY CASCADE",
    )


def remaining(dsn: str) -> int:
    """Count jobs not finished yet."""
    return int(scalar(dsn, "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"))


def window(dsn: str) -> tuple[Any, ...]:
    """Return (first start, last success, successes) from procrastinate's own event timestamps."""
    return fetchone(
        dsn,
        "SELECT extract(epoch FROM min(at) FILTER (WHERE type = 'started')),"
        " extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')),"
        " count(*) FILTER (WHERE type = 'succeeded') FROM procrastinate_events",
    )


def worker(
    dsn: str, concurrency: int | None, env: dict[str, str] | None = None
) -> Callable[[str], subprocess.Popen[bytes]]:
    """Return a function that spawns `procrastinate worker` (default options unless concurrency is given)."""
    cmd = [sys.executable, "-m", "procrastinate", "--app=procrastinate_app.app", "worker"]
    if concurrency is not None:
        cmd += ["--concurrency", str(concurrency)]

    def start(log: str) -> subprocess.Popen[bytes]:
        """Spawn the worker, logging to log."""
        return spawn(cmd, log, {"PYTHONPATH": HERE, "BENCH_PG_DSN": dsn, **(env or {})}, HERE)

    return start


def main() -> None:
    """Run the selected scenarios and append their figures to --out."""
    args = parse_args(__doc__ or "")
    dsn, only, n = args.dsn, args.only, args.n
    os.environ["BENCH_PG_DSN"] = dsn  # read by procrastinate_app when imported
    from procrastinate_app import app, noop, sleep50, stamp

    def emit(scenario: str, unit: str, runs: list[float], **extra: Any) -> None:
        """Record one figure if --only selects it."""
        if wanted(only, scenario):
            record(args.out, SYSTEM, VERSION, scenario, unit, runs, extra, CONFIG, SETTINGS)

    def drain_extra(size: int, conc: int, task: str, from_spawn: list[float]) -> dict[str, Any]:
        """Describe a drain measurement."""
        return {
            "n": size,
            "concurrency": conc,
            "task": task,
            "spawn_to_done": round(statistics.median(from_spawn), 3),
            "spawn_to_done_runs": [round(x, 3) for x in from_spawn],
        }

    with app.open():  # sync connector pool for defer / batch_defer from this process
        if not scalar(dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'procrastinate_jobs'"):
            app.schema_manager.apply_schema()

        if wanted(only, "enqueue_single"):
            banner("procrastinate enqueue_single")
            runs = []
            for _ in range(args.runs):
                reset(dsn)
                t = time.perf_counter()
                for _ in range(n):
                    noop.defer()
                runs.append(n / (time.perf_counter() - t))
            emit("enqueue_single", "jobs/s", runs, n=n, api="sync defer()")

        if wanted(only, "enqueue_bulk"):
            banner("procrastinate enqueue_bulk")
            runs = []
            for _ in range(args.runs):
                reset(dsn)
                t = time.perf_counter()
                noop.batch_defer(*([{}] * n))
                runs.append(n / (time.perf_counter() - t))
            emit("enqueue_bulk", "jobs/s", runs, n=n, api="batch_defer()")

        # noop is `async def`, so drain_async_c10 is the c10 drain itself, recorded a second time.
        for conc, keys in ((1, ("drain_noop_c1",)), (10, ("drain_noop_c10", "drain_async_c10"))):
            if wanted(only, *keys):
                banner(f"procrastinate drain concurrency={conc}")
                steady, from_spawn = measure_drain(
                    args,
                    f"procrastinate-drain-c{conc}",
                    n,
                    lambda: reset(dsn),
                    lambda k: noop.batch_defer(*([{}] * k)),
                    lambda: remaining(dsn),
                    lambda: window(dsn),
                    worker(dsn, conc),
                )
                extra = drain_extra(n, conc, "async def noop", from_spawn)
                emit(keys[0], "jobs/s", steady, **extra)
                if len(keys) > 1:
                    emit(keys[1], "jobs/s", steady, **extra, same_as=keys[0])

        for conc in (100, 200):
            if wanted(only, f"io_async_c{conc}"):
                banner(f"procrastinate io concurrency={conc}")
                steady, from_spawn = measure_drain(
                    args,
                    f"procrastinate-io-c{conc}",
                    args.n_io,
                    lambda: reset(dsn),
                    lambda k: sleep50.batch_defer(*([{}] * k)),
                    lambda: remaining(dsn),
                    lambda: window(dsn),
                    worker(dsn, conc),
                )
                extra = drain_extra(args.n_io, conc, "async def: await asyncio.sleep(0.05)", from_spawn)
                emit(f"io_async_c{conc}", "jobs/s", steady, **extra, ideal=conc / 0.05)

        if wanted(only, "latency_p50", "latency_p95"):
            banner("procrastinate latency")
            measured = measure_latency(
                args,
                "procrastinate-latency",
                lambda: reset(dsn),
                lambda: remaining(dsn),
                lambda enq: stamp.defer(enq=enq),
                lambda log, lat_file: worker(dsn, None, {"BENCH_LAT_FILE": lat_file})(log),
            )
            how = {"n": args.n_lat, "spacing_s": 0.2, "worker": "defaults: LISTEN/NOTIFY, concurrency 1"}
            emit_latency(emit, measured, **how)


if __name__ == "__main__":
    main()
