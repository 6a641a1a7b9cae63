"""django-tasks-db peer benchmark (Django 6 django.tasks + DatabaseBackend + db_worker) on PostgreSQL."""

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
PROJECT = os.path.join(HERE, "djtasks_project")
sys.path.insert(0, HERE)
sys.path.insert(0, PROJECT)

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

SYSTEM = "django-tasks-db"
VERSION = (
    f"django-tasks-db {version('django-tasks-db')}, Django {version('Django')} (django.tasks), "
    f"django-tasks {version('django-tasks')}, psycopg {version('psycopg')}, py {py_version()}"
)
CONN_MAX_AGE = "600"  # the worker's best honest setting (Django's default 0 reconnects every loop)
#: Its documented best: persistent connections and prepared statements (see peersite.settings).
CONFIG = "tuned"


def reset(dsn: str) -> None:
    """Empty django-tasks-db's table."""
    execute(dsn, "TRUNCATE django_tasks_database_dbtaskresult")


def remaining(dsn: str) -> int:
    """Count tasks not finished yet."""
    return int(
        scalar(
            dsn,
            "SELECT count(*) FROM django_tasks_database_dbtaskresult WHERE status IN ('READY', 'RUNNING')",
        )
    )


def window(dsn: str) -> tuple[Any, ...]:
    """Return (first start, last finish, successes) from the task rows' own timestamps."""
    return fetchone(
        dsn,
        "SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)),"
        " count(*) FILTER (WHERE status = 'SUCCESSFUL') FROM django_tasks_database_dbtaskresult",
    )


def worker(
    dsn: str, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Callable[[str], subprocess.Popen[bytes]]:
    """Return a function that spawns `manage.py db_worker --no-startup-delay` with CONN_MAX_AGE=600."""
    cmd = [sys.executable, "manage.py", "db_worker", "--no-startup-delay", *extra_args]

    def start(log: str) -> subprocess.Popen[bytes]:
        """Spawn the worker, logging to log."""
        return spawn(cmd, log, {"BENCH_PG_DSN": dsn, "DJ_CONN_MAX_AGE": CONN_MAX_AGE, **(env or {})}, PROJECT)

    return start


def main() -> None:
    """Migrate, run the selected scenarios and append their figures to --out."""
    args = parse_args(__doc__ or "")
    dsn, only, n = args.dsn, args.only, args.n
    os.environ["BENCH_PG_DSN"] = dsn  # read by the settings, here and in the workers
    os.environ["DJANGO_SETTINGS_MODULE"] = "peersite.settings"  # also for the workers
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT, check=True)

    import django

    django.setup()
    from django.conf import settings
    from peertasks.tasks import noop, stamp

    described = (
        f"{settings.BENCH_SETTINGS}; TASKS: "
        "django_tasks_db.DatabaseBackend; worker: manage.py db_worker --no-startup-delay, one task "
        "at a time (latency: --interval 0.1)"
    )

    def emit(scenario: str, unit: str, runs: list[float], **extra: Any) -> None:
        """Record one figure if --only selects it."""
        if wanted(only, scenario):
            record(args.out, SYSTEM, VERSION, scenario, unit, runs, extra, CONFIG, described)

    def prefill(task: Any, k: int) -> None:
        """Enqueue k tasks one at a time (django.tasks has no bulk enqueue); not timed."""
        for _ in range(k):
            task.enqueue()

    if wanted(only, "enqueue_single"):
        banner("django-tasks-db enqueue_single")
        runs = []
        for _ in range(args.runs):
            reset(dsn)
            t = time.perf_counter()
            for _ in range(n):
                noop.enqueue()
            runs.append(n / (time.perf_counter() - t))
        emit("enqueue_single", "jobs/s", runs, n=n, api="task.enqueue()")
    # enqueue_bulk: skipped, django.tasks / django-tasks-db offer no bulk enqueue.

    # drain_noop_c10, drain_async_c10, io_async_c100/c200: skipped, db_worker runs one task at a time
    # (no concurrency option); the single-worker drain below is what it can do.
    for key, task, size, task_desc in (("drain_noop_c1", noop, n, "def noop (sync)"),):
        if wanted(only, key):
            banner(f"django-tasks-db {key}")
            steady, from_spawn = measure_drain(
                args,
                f"djtasks-{key}",
                size,
                lambda: reset(dsn),
                lambda k, task=task: prefill(task, k),
                lambda: remaining(dsn),
                lambda: window(dsn),
                worker(dsn),
            )
            extra: dict[str, Any] = {
                "n": size,
                "concurrency": 1,
                "task": task_desc,
                "worker": f"db_worker --no-startup-delay, CONN_MAX_AGE={CONN_MAX_AGE}",
                "spawn_to_done": round(statistics.median(from_spawn), 3),
                "spawn_to_done_runs": [round(x, 3) for x in from_spawn],
            }
            emit(key, "jobs/s", steady, **extra)

    if wanted(only, "latency_p50", "latency_p95"):
        banner("django-tasks-db latency")
        measured = measure_latency(
            args,
            "djtasks-latency",
            lambda: reset(dsn),
            lambda: remaining(dsn),
            lambda enq: stamp.enqueue(enq=enq),
            lambda log, lat_file: worker(dsn, ("--interval", "0.1"), {"BENCH_LAT_FILE": lat_file})(log),
        )
        how = {
            "n": args.n_lat,
            "spacing_s": 0.2,
            "worker": f"db_worker --interval 0.1 (polling) --no-startup-delay, CONN_MAX_AGE={CONN_MAX_AGE}",
            "interval_s": 0.1,
        }
        emit_latency(emit, measured, **how)


if __name__ == "__main__":
    main()
