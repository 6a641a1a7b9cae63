"""aio_async's side of the benchmark: enqueue, drain, I/O, pick-up latency, scale, memory.

Run as ``python -m benchmarks.aio --dsn DSN --config default --runs R --n N ... --out RESULTS.jsonl``;
it appends one JSON line per figure, in the same shape as the peers' scripts. ``--config``
(``BENCH_CONFIG``, read by ``benchmarks.settings`` here and in the workers) picks Django's
default database settings (system ``aio_async``) or the tuned ones (``aio_async tuned``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import django

ROOT = Path(__file__).resolve().parents[1]
#: The system's name in the results, by configuration: the headline is Django's defaults.
SYSTEMS = {"default": "aio_async", "tuned": "aio_async tuned"}


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument(
        "--config",
        choices=sorted(SYSTEMS),
        default="default",
        help="database settings: Django's defaults, or CONN_MAX_AGE and prepare_threshold (see settings)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--n-io", type=int, default=1000)
    parser.add_argument("--n-lat", type=int, default=50)
    parser.add_argument("--n-memory", type=int, default=100_000)
    parser.add_argument("--out", required=True)
    parser.add_argument("--logs", required=True)
    parser.add_argument("--only", default="", help="families: enqueue,drain,io,latency,scale,memory,prune")
    parser.add_argument("--sqlite", default="", help="measure on this SQLite file instead of PostgreSQL")
    return parser.parse_args()


OPTIONS = _options()
os.environ["BENCH_PG_DSN"] = OPTIONS.dsn
os.environ["BENCH_CONFIG"] = OPTIONS.config  # read by benchmarks.settings, here and in workers
if OPTIONS.sqlite:
    os.environ["BENCH_SQLITE"] = OPTIONS.sqlite  # read by benchmarks.settings, here and in workers
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count, Max, Min  # noqa: E402

from aio_async import schedule, schedule_many  # noqa: E402
from aio_async.models import Job, Status  # noqa: E402
from benchmarks import tasks  # noqa: E402
from benchmarks.peers import _common  # noqa: E402

VERSION = (
    f"aio_async {version('aio_async')}, Django {version('Django')}, psycopg {version('psycopg')}, "
    f"py {sys.version.split()[0]}"
)
ONLY = set(filter(None, OPTIONS.only.split(",")))
SYSTEM = SYSTEMS[OPTIONS.config]
#: Names the worker logs and latency files: one set per system and configuration.
LABEL = SYSTEM.replace(" ", "-") + ("-sqlite" if OPTIONS.sqlite else "")
WORKER = "python -m aio_async run --settings benchmarks.settings --concurrency N (latency: 1, LISTEN/NOTIFY)"


def wanted(family: str) -> bool:
    """True when the run includes this scenario family."""
    return not ONLY or family in ONLY


def record(scenario: str, unit: str, runs: list[float], **extra: Any) -> None:
    """Append one figure (the median of its runs) to the results file."""
    prefix = "sqlite_" if OPTIONS.sqlite else ""
    _common.record(
        OPTIONS.out,
        SYSTEM,
        VERSION,
        f"{prefix}{scenario}",
        unit,
        runs,
        extra,
        config=settings.BENCH_CONFIG,
        settings=f"{settings.BENCH_SETTINGS}; worker: {WORKER}",
    )


def sql(statement: str, params: tuple[Any, ...] = ()) -> Any:
    """Run one statement on the benchmark database and return its first column, if any."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone() if cursor.description else None
    return row[0] if row else None


def reset() -> None:
    """Empty the queue's tables."""
    if connection.vendor == "postgresql":
        sql("TRUNCATE aio_async_error, aio_async_job, aio_async_group RESTART IDENTITY CASCADE")
        return
    for table in ("aio_async_error", "aio_async_job", "aio_async_group"):
        sql(f"DELETE FROM {table}")


def remaining(due_only: bool = False) -> int:
    """Jobs not finished yet (only those due, with ``due_only``).

    Two counts, each on one of the partial indexes: polled every 0.1 s beside a million
    finished rows, a count over the whole table would take a core from the worker measured.
    """
    due = " AND run_after <= now()" if due_only else ""
    return int(
        sql(
            f"SELECT (SELECT count(*) FROM aio_async_job WHERE status = 'queued'{due}) "
            "+ (SELECT count(*) FROM aio_async_job WHERE status = 'running')"
        )
    )


class Worker:
    """``python -m aio_async run`` in a session of its own."""

    def __init__(self, tag: str, *arguments: str, env: dict[str, str] | None = None) -> None:
        os.makedirs(OPTIONS.logs, exist_ok=True)
        self.log = open(os.path.join(OPTIONS.logs, f"{LABEL}-{tag}.log"), "ab")  # noqa: SIM115
        self.spawned = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aio_async", "--settings", "benchmarks.settings", "run", *arguments],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for(self, predicate: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
        """Poll until ``predicate`` holds; fail if the worker died or time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.process.returncode}; see {self.log.name}")
            time.sleep(every)
        raise TimeoutError(f"not done within {timeout} s; see {self.log.name}")

    def rss_kib(self) -> int:
        """The worker's resident memory now."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        """SIGTERM the worker's group; SIGKILL it after 15 s."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def fill(function: Any, count: int, args: tuple[Any, ...] = (), *, unique: bool = False) -> None:
    """Put ``count`` calls in the queue, in batches (not timed); each call unique if asked."""
    for start in range(0, count, 5000):
        size = min(5000, count - start)
        if unique:  # the job's index is its argument, so that each call is a key of its own
            schedule_many(function, [((index,), None) for index in range(start, start + size)], unique=True)
        else:
            schedule_many(function, [(args, None)] * size)


def window(after: int = 0) -> tuple[float, float, int]:
    """First start, last completion (epoch seconds) and jobs succeeded, of jobs with ids above ``after``."""
    done = Job.objects.filter(status=Status.SUCCEEDED, pk__gt=after).aggregate(
        first=Min("started"), last=Max("finished"), count=Count("pk")
    )
    return done["first"].timestamp(), done["last"].timestamp(), done["count"]


def drain(
    tag: str, function: Any, count: int, concurrency: int, args: tuple[Any, ...] = (), *, unique: bool = False
) -> tuple[list[float], list[float]]:
    """Drain ``count`` prefilled jobs with one worker; steady and spawn-to-done rates per run."""
    steady, total = [], []
    for run in range(OPTIONS.runs):
        reset()
        fill(function, count, args, unique=unique)
        worker = Worker(f"{tag}-{run}", "--concurrency", str(concurrency))
        try:
            worker.wait_for(lambda: remaining() == 0, timeout=900, every=0.1)
        finally:
            worker.stop()
        first, last, done = window()
        assert done == count, (done, count)
        steady.append(count / (last - first))
        total.append(count / (last - worker.spawned))
    return steady, total


def enqueue() -> None:
    """schedule() one at a time (plain, then each call unique), and schedule_many() in one call."""
    single, unique, bulk = [], [], []
    for _ in range(OPTIONS.runs):
        reset()
        started = time.perf_counter()
        for _ in range(OPTIONS.n):
            schedule(tasks.noop)
        single.append(OPTIONS.n / (time.perf_counter() - started))
        reset()
        started = time.perf_counter()
        for index in range(OPTIONS.n):
            schedule(tasks.noop_with, [index], unique=True)
        unique.append(OPTIONS.n / (time.perf_counter() - started))
        reset()
        started = time.perf_counter()
        schedule_many(tasks.noop, [((), None)] * OPTIONS.n)
        bulk.append(OPTIONS.n / (time.perf_counter() - started))
    record("enqueue_single", "jobs/s", single)
    record("enqueue_single_unique", "jobs/s", unique, kind="unique=True")
    record("enqueue_bulk", "jobs/s", bulk)


def drains() -> None:
    """No-op sync jobs at concurrency 1 and 10; no-op coroutine jobs at 10."""
    for concurrency in (1, 10):
        steady, total = drain(f"drain-c{concurrency}", tasks.noop, OPTIONS.n, concurrency)
        record(f"drain_noop_c{concurrency}", "jobs/s", steady, spawn_to_done=total, kind="sync def")
    steady, total = drain("drain-async-c10", tasks.anoop, OPTIONS.n, 10)
    record("drain_async_c10", "jobs/s", steady, spawn_to_done=total, kind="async def")
    steady, total = drain("drain-unique-c10", tasks.noop_with, OPTIONS.n, 10, unique=True)
    record("drain_unique_c10", "jobs/s", steady, spawn_to_done=total, kind="sync def, unique=True")


def io() -> None:
    """50 ms waits: coroutines at 100 and 200, threads at 20."""
    for concurrency in (100, 200):
        steady, total = drain(f"io-c{concurrency}", tasks.asleep50, OPTIONS.n_io, concurrency)
        record(f"io_async_c{concurrency}", "jobs/s", steady, ideal=concurrency / 0.05, spawn_to_done=total)
    if OPTIONS.sqlite:
        return  # SQLite's one write lock serialises sync jobs' transactions: about 20 jobs/s here
    steady, total = drain("io-sync-c20", tasks.sleep50, OPTIONS.n_io // 2, 20)
    record("io_sync_c20", "jobs/s", steady, ideal=20 / 0.05, spawn_to_done=total)


def latency() -> None:
    """An idle worker on NOTIFY; jobs scheduled 0.2 s apart; start minus the schedule's commit.

    The coroutine stamp is the peers' shape; the sync one adds the hop to a job thread.
    """

    def start(log: str, stamps: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "aio_async", "--settings", "benchmarks.settings", "run"]
        env = {"PYTHONPATH": str(ROOT), "BENCH_LAT_FILE": stamps}
        return _common.spawn([*command, "--concurrency", "1"], log, env, str(ROOT))

    for scenario, function, kind in (
        ("latency", tasks.astamp, "async def"),
        ("latency_sync", tasks.stamp, "sync def"),
    ):
        measured = _common.measure_latency(
            OPTIONS,
            f"{LABEL}-{scenario}",
            reset,
            remaining,
            lambda enqueued, function=function: schedule(function, [enqueued]),
            start,
        )
        how = {"n": OPTIONS.n_lat, "spacing_s": 0.2, "worker": "run --concurrency 1 (LISTEN/NOTIFY)"}
        _common.emit_latency(record, measured, scenario, kind=kind, **how)


CLAIM_EXPLAIN = (
    "EXPLAIN (ANALYZE, BUFFERS OFF, COSTS OFF, TIMING OFF) SELECT id FROM aio_async_job "
    "WHERE status = 'queued' AND queue IN ('default') AND run_after <= now() AND limit_key IS NULL "
    "ORDER BY priority DESC, run_after, id LIMIT 20 FOR UPDATE SKIP LOCKED"
)


def scale() -> None:
    """The no-op drain beside a million finished jobs and 100,000 future ones.

    The history is written once, vacuumed and checkpointed; each run then drains its own
    jobs beside it (the finished ones of earlier runs join the history).
    """
    reset()
    sql(
        "INSERT INTO aio_async_job (name, args, kwargs, meta, identity, queue, priority, status, added, "
        "run_after, finished, attempts, excused, max_attempts, isolated, locked_by) "
        "SELECT 'benchmarks.tasks.noop', '[]', '{}', '{}', md5(g::text), 'default', 5, 'succeeded', "
        "now(), now(), now(), 1, 0, 1, false, 'history' FROM generate_series(1, 1000000) g"
    )
    sql(
        "INSERT INTO aio_async_job (name, args, kwargs, meta, identity, queue, priority, status, added, "
        "run_after, attempts, excused, max_attempts, isolated, locked_by) "
        "SELECT 'benchmarks.tasks.noop', '[]', '{}', '{}', md5(g::text), 'default', 5, 'queued', "
        "now(), now() + interval '1 day', 0, 0, 1, false, '' FROM generate_series(1, 100000) g"
    )
    sql("VACUUM ANALYZE aio_async_job")
    sql("CHECKPOINT")  # the history's writes are on disk before the clock starts
    steady, total = [], []
    plan = ""
    for run in range(OPTIONS.runs):
        before = int(sql("SELECT max(id) FROM aio_async_job"))
        fill(tasks.noop, OPTIONS.n)
        with connection.cursor() as cursor:
            cursor.execute(CLAIM_EXPLAIN)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        worker = Worker(f"scale-{run}", "--concurrency", "10")
        try:
            worker.wait_for(lambda: remaining(due_only=True) == 0, timeout=900, every=0.5)
        finally:
            worker.stop()
        first, last, done = window(after=before)
        assert done == OPTIONS.n, (done, OPTIONS.n)
        steady.append(OPTIONS.n / (last - first))
        total.append(OPTIONS.n / (last - worker.spawned))
    record("scale_drain_noop_c10", "jobs/s", steady, spawn_to_done=total, claim_plan=plan)


def memory() -> None:
    """The worker's resident memory after 10 % of a long drain and at its end.

    Sync and coroutine no-ops alternate in blocks of 1,000, so both paths (job threads and
    their connections, the loop and its batched completions) run all the way through.
    """
    reset()
    for start in range(0, OPTIONS.n_memory, 1000):
        block = min(1000, OPTIONS.n_memory - start)
        schedule_many(tasks.noop if start // 1000 % 2 == 0 else tasks.anoop, [((), None)] * block)
    worker = Worker("memory", "--concurrency", "10")
    samples: list[tuple[int, int]] = []

    def sampled() -> bool:
        done = OPTIONS.n_memory - remaining()
        samples.append((done, worker.rss_kib()))
        return done >= OPTIONS.n_memory

    try:
        worker.wait_for(sampled, timeout=1800, every=0.5)
        samples.append((OPTIONS.n_memory, worker.rss_kib()))
    finally:
        worker.stop()
    tenth = next(rss for done, rss in samples if done >= OPTIONS.n_memory // 10)
    peak = max(rss for _, rss in samples)
    end = samples[-1][1]
    record(
        "memory_rss_growth",
        "%",
        [100.0 * (end - tenth) / tenth],
        rss_at_10pct_kib=tenth,
        rss_at_end_kib=end,
        peak_kib=peak,
        jobs=OPTIONS.n_memory,
        kind="sync and async def no-ops, alternating in blocks of 1,000",
    )


def prune_latency() -> None:
    """Pick-up latency of an idle worker while ``prune`` deletes 100,000 finished jobs.

    The jobs (10 % with an error each) finished two days ago; ``prune --succeeded 1d`` runs
    as its own process while a job is scheduled every 20 ms. Each job's latency is its start
    minus its schedule's commit, as in ``latency``.
    """
    rows = 100_000
    reset()
    sql(
        "INSERT INTO aio_async_job (name, args, kwargs, meta, identity, queue, priority, status, added, "
        "run_after, finished, attempts, excused, max_attempts, isolated, locked_by, unique_states) "
        "SELECT 'benchmarks.tasks.noop', '[]', '{}', '{}', md5(g::text), 'default', 5, 'succeeded', "
        "now() - interval '2 days', now() - interval '2 days', now() - interval '2 days', 1, 0, 1, false, "
        f"'history', '' FROM generate_series(1, {rows}) g"
    )
    sql(
        "INSERT INTO aio_async_error (job_id, attempt, exception, message, traceback, worker, created) "
        "SELECT id, 1, 'ValueError', 'boom', '', 'history', now() FROM aio_async_job WHERE id %% 10 = 0"
    )
    sql("VACUUM ANALYZE aio_async_job")
    sql("VACUUM ANALYZE aio_async_error")
    sql("CHECKPOINT")
    stamps = os.path.join(OPTIONS.logs, f"{LABEL}-prune-latency.txt")
    with contextlib.suppress(FileNotFoundError):
        os.remove(stamps)
    worker = Worker("prune-latency", "--concurrency", "1", env={"BENCH_LAT_FILE": stamps})
    committed: dict[float, float] = {}
    try:
        schedule(tasks.astamp, [0.0])  # warm-up
        worker.wait_for(lambda: remaining() == 0, timeout=60)
        began = time.time()
        with open(os.path.join(OPTIONS.logs, f"{LABEL}-prune.log"), "ab") as log:
            pruning = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aio_async",
                    "--settings",
                    "benchmarks.settings",
                    "prune",
                    "--succeeded",
                    "1d",
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        while pruning.poll() is None:
            called = time.time()
            schedule(tasks.astamp, [called])
            committed[called] = time.time()
            time.sleep(0.02)
        took = time.time() - began
        assert pruning.returncode == 0, pruning.returncode
        worker.wait_for(lambda: remaining() == 0, timeout=60)
    finally:
        worker.stop()
    left = int(sql("SELECT count(*) FROM aio_async_job WHERE locked_by = 'history'"))
    assert left == 0, left
    latencies = [
        (start - committed[enqueued]) * 1000 for enqueued, start in _common.read_latency_file(stamps)
    ]
    record(
        "prune_pickup_latency_p99",
        "ms",
        [_common.pct(latencies, 0.99)],
        p50_ms=round(_common.pct(latencies, 0.5), 3),
        max_ms=round(max(latencies), 3),
        jobs_during_prune=len(latencies),
        pruned=rows,
        prune_seconds=round(took, 2),
        kind="async def, scheduled every 20 ms while prune --succeeded 1d deletes 100,000 jobs",
    )


def main() -> None:
    """Migrate, then run the chosen scenario families."""
    call_command("migrate", verbosity=0)
    for family, run in (
        ("enqueue", enqueue),
        ("drain", drains),
        ("io", io),
        ("latency", latency),
        ("scale", scale),
        ("memory", memory),
        ("prune", prune_latency),
    ):
        if wanted(family):
            what = f"=== {SYSTEM} ({settings.BENCH_CONFIG}) {family}"
            print(what, file=sys.stderr, flush=True)
            started = time.monotonic()
            run()
            print(f"{what}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    reset()


if __name__ == "__main__":
    main()
