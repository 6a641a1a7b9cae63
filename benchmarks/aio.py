"""aio_async's side of the benchmark: each of its scenario families (``--only`` names them).

Run as ``python -m benchmarks.aio --dsn DSN --config default --runs R --n N ... --out RESULTS.jsonl``;
it appends one JSON line per figure, in the same shape as the peers' scripts. ``--config``
(``BENCH_CONFIG``, read by ``benchmarks.settings`` here and in the workers) picks Django's
default database settings (system ``aio_async``) or the tuned ones (``aio_async tuned``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
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
    parser.add_argument(
        "--n-held", type=int, default=100_000, help="jobs drained in the held-snapshot family"
    )
    parser.add_argument("--hold", type=float, default=60.0, help="seconds the held-snapshot family holds it")
    parser.add_argument("--slice", type=float, default=10.0, help="the held-snapshot family's slices, in s")
    parser.add_argument("--out", required=True)
    parser.add_argument("--logs", required=True)
    parser.add_argument(
        "--only",
        default="",
        help="families: enqueue,drain,io,latency,scale,memory,prune,held,steps,suspended",
    )
    parser.add_argument("--sqlite", default="", help="measure on this SQLite file instead of PostgreSQL")
    return parser.parse_args()


OPTIONS = _options()
os.environ["BENCH_PG_DSN"] = OPTIONS.dsn
os.environ["BENCH_CONFIG"] = OPTIONS.config  # read by benchmarks.settings, here and in workers
if OPTIONS.sqlite:
    os.environ["BENCH_SQLITE"] = OPTIONS.sqlite  # read by benchmarks.settings, here and in workers
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count, Max, Min  # noqa: E402

from aio_async import schedule, schedule_many  # noqa: E402
from aio_async.models import AttemptRecord, Job, Status, Step, StepStatus  # noqa: E402
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
    # The rows that point to jobs first: SQLite enforces the foreign keys without cascading.
    for table in (
        "aio_async_error",
        "aio_async_step",
        "aio_async_attempt",
        "aio_async_job",
        "aio_async_group",
    ):
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

    def __init__(
        self, tag: str, *arguments: str, env: dict[str, str] | None = None, module: str = "aio_async"
    ) -> None:
        os.makedirs(OPTIONS.logs, exist_ok=True)
        self.log = open(os.path.join(OPTIONS.logs, f"{LABEL}-{tag}.log"), "ab")  # noqa: SIM115
        self.spawned = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--settings", "benchmarks.settings", "run", *arguments],
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

    def cpu_seconds(self) -> float:
        """The worker's CPU time so far (user and system), from ``/proc``."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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


def drain_queued(
    tag: str,
    count: int,
    concurrency: int,
    *,
    env: dict[str, str] | None = None,
    module: str = "aio_async",
    costs: dict[str, float] | None = None,
) -> tuple[float, float]:
    """Drain the ``count`` jobs in the queue with one worker; its steady and spawn-to-done rates.

    With ``costs``, it also notes the worker's CPU seconds and the WAL bytes the drain wrote,
    from its first claim to its last completion (the worker's start-up left out).
    """
    worker = Worker(tag, "--concurrency", str(concurrency), env=env, module=module)
    try:
        if costs is not None:
            worker.wait_for(lambda: remaining() < count, timeout=120, every=0.01)
            cpu, wal = worker.cpu_seconds(), int(sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
        worker.wait_for(lambda: remaining() == 0, timeout=900, every=0.1)
        if costs is not None:
            costs["cpu"] = worker.cpu_seconds() - cpu
            costs["wal"] = int(sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")) - wal
    finally:
        worker.stop()
    first, last, done = window()
    assert done == count, (done, count)
    return count / (last - first), count / (last - worker.spawned)


def drain(
    tag: str, function: Any, count: int, concurrency: int, args: tuple[Any, ...] = (), *, unique: bool = False
) -> tuple[list[float], list[float]]:
    """Drain ``count`` prefilled jobs with one worker; steady and spawn-to-done rates per run."""
    steady, total = [], []
    for run in range(OPTIONS.runs):
        reset()
        fill(function, count, args, unique=unique)
        rate, whole = drain_queued(f"{tag}-{run}", count, concurrency)
        steady.append(rate)
        total.append(whole)
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


#: The worker-shaped claim's SELECT, without FOR UPDATE: timed from a side connection about
#: once a second while the held-snapshot family drains (the worker's own claim is timed too).
CLAIM_PROBE = (
    "SELECT id FROM aio_async_job WHERE status = 'queued' AND run_after <= now() "
    "AND queue IN ('default') AND limit_key IS NULL ORDER BY priority DESC, run_after, id LIMIT 10"
)
#: The job table's dead tuples, its size with its indexes, the WAL position and the database's clock.
TABLE_STATE = (
    "SELECT coalesce((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'aio_async_job'), 0), "
    "pg_total_relation_size('aio_async_job'), pg_current_wal_lsn()::text, "
    "extract(epoch FROM clock_timestamp())"
)


def _lsn(text: str) -> int:
    """A WAL position ``X/Y`` as a byte offset."""
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def table_state(db: psycopg.Connection[Any]) -> tuple[int, int, str, float]:
    """(dead tuples, bytes of the job table and its indexes, WAL position, epoch now) of the database."""
    row = db.execute(TABLE_STATE).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), str(row[2]), float(row[3])


_WAL_RECORD = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*(\d+),")
_WAL_DATABASE = re.compile(r"(?: rel \d+/| db )(\d+)")


def keep_wal(db: psycopg.Connection[Any]) -> bool:
    """Hold the WAL from now on while ``db`` is open (a temporary physical slot); False if not allowed."""
    try:
        db.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", (f"bench_{os.getpid()}",))
    except psycopg.Error:
        return False
    return True


def database_wal(db: psycopg.Connection[Any], start: str, end: str) -> int | None:
    """WAL bytes from ``start`` to ``end`` that are this database's, read with ``pg_waldump``.

    A record counts when it names one of the database's relations (or the database), and so
    does every record of a transaction that wrote one (its commit included): the writes of
    other databases on the same cluster are left out. None when the WAL cannot be read here.
    """
    try:
        row = db.execute(
            "SELECT oid, current_setting('data_directory'), current_setting('server_version_num') "
            "FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    except psycopg.Error:
        return None
    assert row is not None
    oid, data, major = str(row[0]), str(row[1]), int(row[2]) // 10000
    waldump = shutil.which("pg_waldump") or f"/usr/lib/postgresql/{major}/bin/pg_waldump"
    if not os.access(waldump, os.X_OK) or not os.access(os.path.join(data, "pg_wal"), os.R_OK):
        return None
    per_transaction: dict[str, int] = {}
    ours: set[str] = set()
    loose = 0
    with subprocess.Popen(
        [waldump, "-p", os.path.join(data, "pg_wal"), "-s", start, "-e", end],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as dump:
        assert dump.stdout is not None
        for line in dump.stdout:
            record = _WAL_RECORD.search(line)
            if not record:
                continue
            size, xid = int(record.group(1)), record.group(2)
            named = any(match == oid for match in _WAL_DATABASE.findall(line))
            if xid == "0":
                loose += size if named else 0
                continue
            per_transaction[xid] = per_transaction.get(xid, 0) + size
            if named:
                ours.add(xid)
    if dump.returncode != 0 or not per_transaction:
        return None
    return loose + sum(per_transaction[xid] for xid in ours)


def _slices(
    t0: float, hold: float, last: float, worker_claims: list[tuple[float, float, int]], samples: list[Any]
) -> list[Any]:
    """The drain cut in ``--slice`` seconds from ``t0``: jobs, rate, probe, worker claims, dead tuples."""
    width = OPTIONS.slice
    done = {
        int(k): int(count)
        for k, count in _rows(
            "SELECT floor((extract(epoch FROM finished) - %s) / %s)::int AS k, count(*) FROM aio_async_job "
            "WHERE status = 'succeeded' GROUP BY k",
            (t0, width),
        )
    }
    slices = []
    for k in range(0, math.floor((last - t0) / width) + 1):
        begin, end = t0 + k * width, min(t0 + (k + 1) * width, last)
        if end <= begin:
            break
        probes = [ms for at, ms, _, _ in samples if begin <= at < t0 + (k + 1) * width]
        claims = [(ms, jobs) for at, ms, jobs in worker_claims if begin <= at < t0 + (k + 1) * width]
        dead = [dead for at, _, dead, _ in samples if at < t0 + (k + 1) * width]
        slices.append(
            {
                "slice": k,
                "from_s": k * width,
                "seconds": round(end - begin, 2),
                "held": bool(hold) and (k + 1) * width <= hold + 0.001,
                "jobs": done.get(k, 0),
                "rate": round(done.get(k, 0) / (end - begin), 1),
                "probe_p50_ms": round(_common.pct(probes, 0.5), 3) if probes else None,
                "probe_p99_ms": round(_common.pct(probes, 0.99), 3) if probes else None,
                "probes": len(probes),
                "claim_p50_ms": round(_common.pct([ms for ms, _ in claims], 0.5), 3) if claims else None,
                "claim_p99_ms": round(_common.pct([ms for ms, _ in claims], 0.99), 3) if claims else None,
                "claims": len(claims),
                "jobs_per_claim": round(sum(jobs for _, jobs in claims) / len(claims), 2) if claims else None,
                "dead_tuples": dead[-1] if dead else None,
            }
        )
    return slices


def _rows(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one query on the benchmark database and return its rows."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return list(cursor.fetchall())


def held_drain(tag: str, hold: float) -> dict[str, Any]:
    """Drain ``--n-held`` no-op jobs at concurrency 10 while a snapshot is held ``hold`` s (none: 0).

    The worker starts first; once it has finished a job, a connection of its own runs
    ``BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current();`` and commits ``hold``
    seconds later. Meanwhile a side connection times ``CLAIM_PROBE`` and reads the table's
    dead tuples about once a second; the worker (``benchmarks.timed_worker``) notes each of
    its claims. Returns the slices and the table's growth, dead tuples and WAL over the drain.
    """
    count = OPTIONS.n_held
    reset()
    fill(tasks.noop, count)
    sql("VACUUM ANALYZE aio_async_job")
    sql("CHECKPOINT")  # the fill's writes are on disk before the clock starts
    claims_file = os.path.join(OPTIONS.logs, f"{LABEL}-{tag}-claims.txt")
    with contextlib.suppress(FileNotFoundError):
        os.remove(claims_file)
    side = psycopg.connect(OPTIONS.dsn, autocommit=True)
    holder = psycopg.connect(OPTIONS.dsn, autocommit=True)
    kept = keep_wal(side)  # so that pg_waldump can read the drain's WAL once it is done
    before = table_state(side)
    samples: list[tuple[float, float, int, int]] = []
    released: float | None = None
    worker = Worker(
        tag, "--concurrency", "10", env={"BENCH_CLAIM_FILE": claims_file}, module="benchmarks.timed_worker"
    )
    try:
        worker.wait_for(lambda: remaining() < count, timeout=120)
        if hold:
            holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            row = holder.execute("SELECT txid_current(), extract(epoch FROM now())").fetchone()
            assert row is not None
            t0 = float(row[1])
        else:
            t0 = table_state(side)[3]

        def tick() -> bool:
            nonlocal released
            started = time.perf_counter()
            side.execute(CLAIM_PROBE).fetchall()
            took = (time.perf_counter() - started) * 1000
            dead, size, _, now = table_state(side)
            samples.append((now, took, dead, size))
            if hold and released is None and now - t0 >= hold:
                holder.execute("COMMIT")
                released = now
            return remaining() == 0

        worker.wait_for(tick, timeout=3600, every=1.0)
        if hold and released is None:  # the drain ended within the hold: hold it to its end
            time.sleep(max(0.0, t0 + hold - table_state(side)[3]))
            holder.execute("COMMIT")
    finally:
        worker.stop()
        holder.close()
    time.sleep(1.5)  # the worker's backends have reported their statistics on exit
    after = table_state(side)
    ours = database_wal(side, before[2], after[2]) if kept else None
    side.close()
    first, last, done = window()
    assert done == count, (done, count)
    worker_claims = []
    with contextlib.suppress(FileNotFoundError), open(claims_file) as lines:
        for line in lines:
            at, ms, jobs = line.split()
            worker_claims.append((float(at), float(ms), int(jobs)))
    return {
        "t0": t0,
        "rate": count / (last - first),
        "before_hold": int(
            sql("SELECT count(*) FROM aio_async_job WHERE finished < to_timestamp(%s)", (t0,))
        ),
        "slices": _slices(t0, hold, last, worker_claims, samples),
        "dead_tuples": after[0] - before[0],
        "table_bytes": after[1] - before[1],
        # This database's WAL (pg_waldump), or the cluster's when it cannot be read here.
        "wal_bytes": ours if ours is not None else _lsn(after[2]) - _lsn(before[2]),
        "cluster_wal_bytes": _lsn(after[2]) - _lsn(before[2]),
        "wal_source": "pg_waldump, this database's records" if ours is not None else "cluster",
        "seconds": round(after[3] - before[3], 2),
        "worker_claim_timed": bool(worker_claims),
    }


def held() -> None:
    """The no-op drain at concurrency 10 with a snapshot held, and without: slices, claim cost, bloat.

    The ordinary drain first: dead tuples, bytes (the job table with its indexes) and WAL per
    job, and its slices as a control for the held one's.
    """
    plain = held_drain("held-control", 0)
    count = OPTIONS.n_held
    how = {
        "jobs": count,
        "concurrency": 10,
        "kind": "sync def no-op, VACUUM ANALYZE and CHECKPOINT first",
        "autovacuum": sql("SELECT current_setting('autovacuum')"),  # off: nothing vacuums during the drain
    }
    per_job = {key: round(plain[key] / count, 3) for key in ("dead_tuples", "table_bytes", "wal_bytes")}
    wal_note = {key: plain[key] for key in ("wal_bytes", "cluster_wal_bytes", "wal_source", "seconds")}
    record(
        "drain_dead_tuples_per_job",
        "tuples",
        [per_job["dead_tuples"]],
        dead_tuples=plain["dead_tuples"],
        **how,
    )
    record(
        "drain_table_bytes_per_job", "B", [per_job["table_bytes"]], table_bytes=plain["table_bytes"], **how
    )
    record("drain_wal_bytes_per_job", "B", [per_job["wal_bytes"]], **wal_note, **how)
    snapshot = held_drain("held-snapshot", OPTIONS.hold)
    held_slices = [s for s in snapshot["slices"] if s["held"]]
    first, last = (held_slices[0], held_slices[-1]) if held_slices else (None, None)
    control = {s["slice"]: s for s in plain["slices"]}
    ratio = last["rate"] / first["rate"] if first and last and first["rate"] else float("nan")
    control_ratio = (
        control[last["slice"]]["rate"] / control[0]["rate"]
        if last and last["slice"] in control and control[0]["rate"]
        else None
    )
    hold_jobs = sum(s["jobs"] for s in held_slices)
    how = {**how, "hold_s": OPTIONS.hold, "slice_s": OPTIONS.slice}
    record(
        "held_snapshot_drain_c10",
        "jobs/s",
        [hold_jobs / (len(held_slices) * OPTIONS.slice) if held_slices else float("nan")],
        whole_drain=round(snapshot["rate"], 1),
        control_whole_drain=round(plain["rate"], 1),
        **how,
    )
    record(
        "held_snapshot_last_vs_first_slice",
        "×",
        [ratio],
        control_same_slices=round(control_ratio, 3) if control_ratio else None,
        slices=snapshot["slices"],
        control_slices=plain["slices"],
        before_hold=snapshot["before_hold"],
        worker_claim_timed=snapshot["worker_claim_timed"],
        per_job_held={
            key: round(snapshot[key] / count, 3) for key in ("dead_tuples", "table_bytes", "wal_bytes")
        },
        **how,
    )
    if first and last:
        for name, key in (("probe_p50", "probe_p50_ms"), ("claim_p50", "claim_p50_ms")):
            if last[key] is not None:
                label = "claim_probe_p50" if name == "probe_p50" else "worker_claim_p50"
                record(
                    f"held_snapshot_{label}_last_held_slice", "ms", [last[key]], first_slice=first[key], **how
                )
        record(
            "held_snapshot_dead_tuples_end_of_hold",
            "tuples",
            [float(last["dead_tuples"] or 0)],
            control_same_time=control.get(last["slice"], {}).get("dead_tuples"),
            **how,
        )


def steps() -> None:
    """Jobs of five no-op steps against as many no-op jobs as they have steps, at concurrency 10.

    Each run drains N no-op jobs and N/5 five-step jobs (``tasks.five_steps``; in a
    coroutine job ``tasks.afive_steps``), one worker each, back to back, the order swapped
    every run; a step's rate is five times its job's. The ratio steps/s ÷ jobs/s is taken
    within each run, so that the machine's drift between runs cancels out.
    """
    per_job = len(tasks.STEPS)
    jobs = max(1, OPTIONS.n // per_job)
    for colour, plain, stepped, kind in (
        ("sync", tasks.noop, tasks.five_steps, "sync def, step() of a no-op function"),
        ("async", tasks.anoop, tasks.afive_steps, "async def, astep() of a no-op coroutine"),
    ):
        job_rates: list[float] = []
        step_rates: list[float] = []
        # The cost of a unit of work (a step, or a no-op job), in the worker and in the database.
        cpu: dict[str, list[float]] = {"job": [], "step": []}
        wal: dict[str, list[float]] = {"job": [], "step": []}
        for run in range(OPTIONS.runs):
            for drained in (plain, stepped) if run % 2 == 0 else (stepped, plain):
                reset()
                count = jobs * per_job if drained is plain else jobs
                fill(drained, count)
                costs: dict[str, float] = {}
                tag = f"steps-{colour}-{drained.__name__}-{run}"
                rate, _ = drain_queued(tag, count, 10, costs=costs)
                unit = "job" if drained is plain else "step"
                cpu[unit].append(costs["cpu"] * 1e6 / (jobs * per_job))
                wal[unit].append(costs["wal"] / (jobs * per_job))
                if drained is plain:
                    job_rates.append(rate)
                    continue
                recorded = int(sql("SELECT count(*) FROM aio_async_step WHERE status = 'succeeded'"))
                assert recorded == count * per_job, (recorded, count * per_job)
                step_rates.append(rate * per_job)
        how = {"concurrency": 10, "kind": kind}
        record(f"steps_{colour}_c10", "steps/s", step_rates, jobs=jobs, steps_per_job=per_job, **how)
        record(f"steps_{colour}_jobs_c10", "jobs/s", job_rates, jobs=jobs * per_job, **how)
        record(
            f"steps_{colour}_per_job_c10",
            "×",
            [steps / plain_jobs for steps, plain_jobs in zip(step_rates, job_rates, strict=True)],
            what="steps/s of the five-step jobs ÷ jobs/s of the no-op jobs, in the same run",
            **how,
        )
        for unit in ("job", "step"):
            what = "a no-op job" if unit == "job" else "a step of the five-step jobs"
            record(
                f"steps_{colour}_{unit}_cpu_c10", "µs", cpu[unit], what=f"the worker's CPU per {what}", **how
            )
            record(
                f"steps_{colour}_{unit}_wal_c10", "bytes", wal[unit], what=f"WAL written per {what}", **how
            )


#: Suspended jobs beside the suspended family's drain.
SUSPENDED = 10_000


def suspended_template() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """One ``tasks.wait_forever`` job as a worker suspended it: its row, its wait's checkpoint, its attempts.

    The values of each row, as the code wrote them, without the ids that tie them together.
    """
    reset()
    schedule(tasks.wait_forever)
    worker = Worker("suspended-template", "--concurrency", "1")
    try:
        worker.wait_for(lambda: remaining() == 0, timeout=60)
    finally:
        worker.stop()
    job = Job.objects.get()
    assert job.status == Status.SUSPENDED, f"the job is {job.status}; see {worker.log.name}"
    wait = Step.objects.get(job=job)
    assert wait.status == StepStatus.WAITING, wait.status
    assert wait.until is None, wait.until  # no timeout: it waits for ever

    def values(row: Any, *leave: str) -> dict[str, Any]:
        """The row's column values by attribute name, less its id and ``leave``."""
        return {
            field.attname: getattr(row, field.attname)
            for field in row._meta.concrete_fields
            if not field.primary_key and field.attname not in leave
        }

    return (
        values(job),
        values(wait, "job_id", "key"),
        [values(attempt, "job_id") for attempt in AttemptRecord.objects.filter(job=job)],
    )


def add_suspended(template: tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]], count: int) -> None:
    """Write ``count`` copies of the template's suspended job, each waiting for an event of its own."""
    job, wait, attempts = template
    made = Job.objects.bulk_create([Job(**job) for _ in range(count)], batch_size=2000)
    Step.objects.bulk_create(
        [Step(job_id=row.pk, key=f"bench-never-{row.pk}", **wait) for row in made], batch_size=2000
    )
    AttemptRecord.objects.bulk_create(
        [AttemptRecord(job_id=row.pk, **attempt) for row in made for attempt in attempts], batch_size=2000
    )


def _timings(path: str) -> list[tuple[float, int]]:
    """The calls in a ``benchmarks.timed_worker`` file: (ms, jobs) each; none if it was not written."""
    with contextlib.suppress(FileNotFoundError), open(path) as lines:
        return [(float(ms), int(jobs)) for _, ms, jobs in map(str.split, lines)]
    return []


#: The SELECT of the wake-up pass (``statements.wake_due``), the one statement that reads
#: suspended jobs: timed from a side connection in the suspended family.
WAKE_PROBE = (
    "SELECT id FROM aio_async_job WHERE status = 'suspended' AND run_after <= now() "
    "ORDER BY run_after LIMIT 500"
)
#: Times each probe runs, per drain of the suspended family.
PROBES = 500


def probe(db: psycopg.Connection[Any], statement: str) -> float:
    """The p50 (µs: tens of them, here) of ``PROBES`` runs of ``statement`` on ``db``, rows fetched."""
    took = []
    for _ in range(PROBES):
        started = time.perf_counter()
        db.execute(statement).fetchall()
        took.append((time.perf_counter() - started) * 1e6)
    return _common.pct(took, 0.5)


def suspended() -> None:
    """The no-op drain at concurrency 10 and its claims beside 10,000 suspended jobs, and without.

    A worker suspends one ``tasks.wait_forever`` job (a wait without a timeout for an event no
    one sends); its job row, its wait's checkpoint and its attempt record are copied to make
    ``SUSPENDED`` of them, each waiting for a key of its own. Each run drains N no-op jobs
    with ``benchmarks.timed_worker`` beside them and on an empty table, the order swapped
    every run, vacuumed, analysed and checkpointed alike; the worker notes each claim's time
    and each wake-up pass's (the one statement that reads suspended jobs, once a poll interval).
    Before each drain a side connection times the claim's SELECT and the wake-up pass's,
    ``PROBES`` times each: the statements alone, without the worker's round trips and threads,
    which a shared machine makes noisy.
    """
    template = suspended_template()
    keys = (
        "rate",
        "claim_p50",
        "claim_p99",
        "per_claim",
        "wake_p50",
        "claims",
        "wakes",
        "probe",
        "wake_probe",
    )
    figures: dict[str, dict[str, list[float]]] = {
        case: {key: [] for key in keys} for case in ("control", "suspended")
    }
    plan = ""
    side = psycopg.connect(OPTIONS.dsn, autocommit=True)
    for run in range(OPTIONS.runs):
        for case in ("control", "suspended") if run % 2 == 0 else ("suspended", "control"):
            reset()
            if case == "suspended":
                add_suspended(template, SUSPENDED)
            fill(tasks.noop, OPTIONS.n)
            sql("VACUUM ANALYZE aio_async_job")
            sql("VACUUM ANALYZE aio_async_step")
            sql("CHECKPOINT")  # the setup's writes are on disk before the clock starts
            if case == "suspended":
                with connection.cursor() as cursor:
                    cursor.execute(CLAIM_EXPLAIN)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
            figures[case]["probe"].append(probe(side, CLAIM_PROBE))
            figures[case]["wake_probe"].append(probe(side, WAKE_PROBE))
            files = {
                name: os.path.join(OPTIONS.logs, f"{LABEL}-suspended-{case}-{run}-{name}.txt")
                for name in ("claims", "wakes")
            }
            for path in files.values():
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            rate, _ = drain_queued(
                f"suspended-{case}-{run}",
                OPTIONS.n,
                10,
                env={"BENCH_CLAIM_FILE": files["claims"], "BENCH_WAKE_FILE": files["wakes"]},
                module="benchmarks.timed_worker",
            )
            left = int(sql("SELECT count(*) FROM aio_async_job WHERE status = 'suspended'"))
            assert left == (SUSPENDED if case == "suspended" else 0), left
            claims, wakes = _timings(files["claims"]), _timings(files["wakes"])
            assert claims, f"no claim was timed; see {files['claims']}"
            figure = figures[case]
            figure["rate"].append(rate)
            figure["claim_p50"].append(_common.pct([ms for ms, _ in claims], 0.5))
            figure["claim_p99"].append(_common.pct([ms for ms, _ in claims], 0.99))
            figure["claims"].append(len(claims))
            # A claim that leases more jobs takes longer: how many each took says whether a
            # change in the claim's time is the table's doing or the batches'.
            figure["per_claim"].append(sum(jobs for _, jobs in claims) / len(claims))
            if wakes:
                figure["wake_p50"].append(_common.pct([ms for ms, _ in wakes], 0.5))
                figure["wakes"].append(len(wakes))
    side.close()
    for case, figure in figures.items():
        name = "suspended" if case == "suspended" else "suspended_control"
        how = {
            "suspended_jobs": SUSPENDED if case == "suspended" else 0,
            "jobs": OPTIONS.n,
            "concurrency": 10,
            "kind": "sync def no-op; worker: benchmarks.timed_worker, VACUUM ANALYZE and CHECKPOINT first",
        }
        record(
            f"{name}_claim_p50",
            "ms",
            figure["claim_p50"],
            claims=figure["claims"],
            jobs_per_claim=[round(jobs, 2) for jobs in figure["per_claim"]],
            **({"claim_plan": plan} if case == "suspended" else {}),
            **how,
        )
        record(f"{name}_claim_p99", "ms", figure["claim_p99"], claims=figure["claims"], **how)
        record(
            f"{name}_drain_c10",
            "jobs/s",
            figure["rate"],
            wake_p50_ms=[round(ms, 3) for ms in figure["wake_p50"]],
            wakes=figure["wakes"],
            **how,
        )
        for key, statement in (("probe", "claim"), ("wake_probe", "wake")):
            record(
                f"{name}_{statement}_select_p50",
                "µs",
                figure[key],
                probes=PROBES,
                statement=CLAIM_PROBE if key == "probe" else WAKE_PROBE,
                **how,
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
        ("held", held),
        ("steps", steps),
        ("suspended", suspended),
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
