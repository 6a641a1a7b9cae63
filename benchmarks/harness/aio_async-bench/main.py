#!/usr/bin/env python3
"""aio_async adapter for the long-horizon portable bench.

Contract: CONTRIBUTING_ADAPTERS.md. One long-running process; stdout is
JSONL telemetry, stderr is logs.

- Producer: `aio_async.schedule_many` (the documented bulk path: one INSERT
  per call) in batches of up to PRODUCER_BATCH_MAX, from a plain Django
  thread, as an application would. Fixed-rate pacing credits offered load on
  real wall-clock elapsed time and re-reads PRODUCER_RATE_CONTROL_FILE each
  tick (high-load phases); PRODUCER_PACING=harness instead consumes the
  harness's `ENQUEUE <n>` stdin tokens. Depth-target mode tops the queue up
  to TARGET_DEPTH.
- Consumer: the documented worker command, `python -m aio_async run
  --concurrency WORKER_COUNT`, as a child process (AIO_BENCH_PROCESSES > 1
  adds `--processes`, with WORKER_COUNT split across them). It dies with this
  process (PR_SET_PDEATHSIG), so a harness SIGKILL of the replica kills the
  worker too, and it is restarted after 5 s if it exits on its own, as the
  documented systemd unit does (Restart=always, RestartSec=5,
  RestartPreventExitStatus=2).
- Metrics: read back from the job table, as an operator would. Every second
  the observer reads the jobs that succeeded since the last read (the
  partial index aio_async_job_succeeded on `finished`), counts them
  (completion_rate) and records `started - added` (claim latency: the
  producer-side creation of the row to the claim) into per-second HDR
  histograms (3 significant figures) merged over the last 30 s. queue_depth
  is `count(*) WHERE status = 'queued'`, polled every 0.2 s.

Each replica counts the jobs its own worker process(es) ran: succeeded rows
keep `locked_by` = "<host>:<pid>:<random>", the worker id, so the poll keeps
the rows whose host and pid are this replica's worker(s) (restarts included).
Only instance 0 reports the global queue_depth and producer_target_rate, as
the other adapters do.
"""

from __future__ import annotations

import collections
import ctypes
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproj.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from hdrh.histogram import HdrHistogram  # noqa: E402
import psycopg  # noqa: E402

import aio_async  # noqa: E402
from benchapp.tasks import bench_job  # noqa: E402

# The harness labels samples itself; AIO_BENCH_SYSTEM (set by its launcher)
# only names this process in its descriptor (aio_async or aio_async_base).
SYSTEM = os.environ.get("AIO_BENCH_SYSTEM") or "aio_async"


def env_int(key: str, default: int) -> int:
    value = os.environ.get(key)
    return int(value) if value not in (None, "") else default


def env_str(key: str, default: str) -> str:
    value = os.environ.get(key)
    return value if value not in (None, "") else default


SAMPLE_EVERY_S = max(1, env_int("SAMPLE_EVERY_S", 5))
PRODUCER_RATE = env_int("PRODUCER_RATE", 800)
PRODUCER_MODE = env_str("PRODUCER_MODE", "fixed")
TARGET_DEPTH = env_int("TARGET_DEPTH", 1000)
WORKER_COUNT = max(1, env_int("WORKER_COUNT", 32))
PRODUCER_BATCH_MAX = max(1, env_int("PRODUCER_BATCH_MAX", 128))
PRODUCER_BATCH_MS = max(1, env_int("PRODUCER_BATCH_MS", 10))
PRODUCER_PACING = env_str("PRODUCER_PACING", "adapter")
CONTROL_FILE = os.environ.get("PRODUCER_RATE_CONTROL_FILE")
INSTANCE_ID = env_int("BENCH_INSTANCE_ID", 0)
PROCESSES = max(1, env_int("AIO_BENCH_PROCESSES", 1))
OBSERVER = INSTANCE_ID == 0
LATENCY_WINDOW_S = 30.0
OBSERVER_LAG_S = 1.0  # read completions this far behind now(): commit lag

stop = threading.Event()
_emit_lock = threading.Lock()
_state_lock = threading.Lock()
state = {
    "enqueued": 0,
    "completed": 0,
    "queue_depth": 0,
    "target_rate": float(PRODUCER_RATE),
    "worker_restarts": 0,
}
# pids of every worker process this replica started (restarts included)
worker_pids: set[str] = set()
HOST = socket.gethostname()
# (poll time, histogram of started - added in µs) for the last 30 s
latency_ring: collections.deque = collections.deque()


def log(msg: str) -> None:
    print(f"[aio_async-bench:{INSTANCE_ID}] {msg}", file=sys.stderr, flush=True)


def now_iso() -> str:
    return (
        dt.datetime.now(dt.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def emit(record: dict) -> None:
    record.setdefault("instance_id", INSTANCE_ID)
    line = json.dumps(record)
    with _emit_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def read_producer_rate(default: int) -> int:
    if not CONTROL_FILE:
        return default
    try:
        with open(CONTROL_FILE) as fh:
            return int(float(fh.read().strip()))
    except Exception:
        return default


# ─── worker child ───────────────────────────────────────────────────────

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def worker_argv() -> list[str]:
    argv = [sys.executable, "-m", "aio_async", "--settings", "benchproj.settings", "-q", "run"]
    if PROCESSES > 1:
        per = max(1, WORKER_COUNT // PROCESSES)
        argv += ["--concurrency", str(per), "--processes", str(PROCESSES)]
    else:
        argv += ["--concurrency", str(WORKER_COUNT)]
    return argv


def start_worker() -> subprocess.Popen:
    argv = worker_argv()
    log(f"starting worker: {' '.join(argv[1:])}")
    proc = subprocess.Popen(
        argv,
        cwd=HERE,
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr,
        stderr=sys.stderr,
        preexec_fn=_die_with_parent,
    )
    with _state_lock:
        worker_pids.add(str(proc.pid))
    return proc


def note_worker_children(proc: subprocess.Popen) -> None:
    """With --processes the jobs run in the supervisor's children: note their pids."""
    if PROCESSES <= 1:
        return
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
            pids = fh.read().split()
    except OSError:
        return
    with _state_lock:
        worker_pids.update(pids)


def worker_supervisor(holder: dict) -> None:
    while not stop.is_set():
        proc: subprocess.Popen = holder["proc"]
        rc = proc.poll()
        if rc is None:
            note_worker_children(proc)
            stop.wait(0.5)
            continue
        if stop.is_set():
            return
        with _state_lock:
            state["worker_restarts"] += 1
        if rc == 2:
            log("worker exited 2 (configuration error); not restarting")
            return
        log(f"worker exited rc={rc}; restarting in 5 s (systemd Restart=always, RestartSec=5)")
        if stop.wait(5.0):
            return
        holder["proc"] = start_worker()


# ─── producer ───────────────────────────────────────────────────────────


def schedule_batch(seq: int, n: int) -> None:
    aio_async.schedule_many(bench_job, [((), {"seq": seq + i}) for i in range(n)])


def producer(tokens: "TokenBucket | None") -> None:
    seq = 0
    rate_credit = 0.0
    last_credit_tick = time.monotonic()
    period_s = PRODUCER_BATCH_MS / 1000.0
    while not stop.is_set():
        if PRODUCER_MODE == "depth-target":
            with _state_lock:
                state["target_rate"] = 0.0
                remaining = TARGET_DEPTH - state["queue_depth"]
            n = min(PRODUCER_BATCH_MAX, remaining)
            if n <= 0:
                stop.wait(0.05)
                continue
        elif tokens is not None:
            with _state_lock:
                state["target_rate"] = float(read_producer_rate(PRODUCER_RATE))
            n = tokens.take(PRODUCER_BATCH_MAX, timeout=0.5)
            if n <= 0:
                continue
        else:
            rate = read_producer_rate(PRODUCER_RATE)
            with _state_lock:
                state["target_rate"] = float(rate)
            if rate <= 0:
                rate_credit = 0.0
                last_credit_tick = time.monotonic()
                stop.wait(0.1)
                continue
            sleep_for = period_s - (time.monotonic() - last_credit_tick)
            if sleep_for > 0:
                time.sleep(sleep_for)
            now = time.monotonic()
            rate_credit += rate * (now - last_credit_tick)  # real elapsed time
            last_credit_tick = now
            if rate_credit < 1.0:
                continue
            n = min(PRODUCER_BATCH_MAX, int(rate_credit))
            rate_credit -= n
        try:
            schedule_batch(seq, n)
        except Exception as exc:  # the database went away: reconnect next time
            log(f"producer insert failed: {type(exc).__name__}: {exc}".splitlines()[0])
            try:
                connection.close()
            except Exception:
                pass
            stop.wait(0.5)
            continue
        seq += n
        with _state_lock:
            state["enqueued"] += n
            if PRODUCER_MODE == "depth-target":
                state["queue_depth"] += n  # until the next poll says otherwise
    try:
        connection.close()
    except Exception:
        pass


class TokenBucket:
    """`ENQUEUE <n>` tokens from the harness pacer (PRODUCER_PACING=harness)."""

    def __init__(self) -> None:
        self._pending = 0
        self._cond = threading.Condition()

    def reader(self) -> None:
        for raw in sys.stdin:
            if stop.is_set():
                return
            line = raw.strip()
            if not line.startswith("ENQUEUE "):
                continue
            try:
                n = int(line.split(" ", 1)[1])
            except ValueError:
                continue
            with self._cond:
                self._pending += max(0, n)
                self._cond.notify()

    def take(self, cap: int, timeout: float) -> int:
        with self._cond:
            if self._pending <= 0:
                self._cond.wait(timeout)
            n = min(cap, self._pending)
            self._pending -= n
            return n


# ─── observer (DB-derived metrics) ──────────────────────────────────────


def _connect() -> psycopg.Connection:
    return psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, connect_timeout=5)


def depth_poller() -> None:
    conn = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = _connect()
            row = conn.execute(
                "SELECT count(*) FROM aio_async_job WHERE status = 'queued'"
            ).fetchone()
            with _state_lock:
                state["queue_depth"] = int(row[0])
        except Exception:
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                pass
            conn = None
            stop.wait(1.0)
            continue
        stop.wait(0.2)


def completion_poller() -> None:
    conn = None
    hwm = None  # last `finished` read
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = _connect()
            if hwm is None:
                hwm = conn.execute(
                    "SELECT now() - make_interval(secs => %s)", (OBSERVER_LAG_S,)
                ).fetchone()[0]
            rows = conn.execute(
                """
                SELECT finished,
                       (extract(epoch FROM (started - added)) * 1000000)::bigint
                FROM aio_async_job
                WHERE status = 'succeeded'
                  AND split_part(locked_by, ':', 1) = %s
                  AND split_part(locked_by, ':', 2) = ANY(%s)
                  AND finished > %s
                  AND finished <= now() - make_interval(secs => %s)
                ORDER BY finished
                """,
                (HOST, sorted(worker_pids), hwm, OBSERVER_LAG_S),
            ).fetchall()
            if rows:
                hwm = rows[-1][0]
                hist = HdrHistogram(1, 3_600_000_000, 3)
                for _, us in rows:
                    if us is not None:
                        hist.record_value(max(1, min(int(us), 3_600_000_000)))
                t = time.monotonic()
                with _state_lock:
                    state["completed"] += len(rows)
                    latency_ring.append((t, hist))
                    while latency_ring and latency_ring[0][0] < t - LATENCY_WINDOW_S:
                        latency_ring.popleft()
        except Exception:
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                pass
            conn = None
            stop.wait(1.0)
            continue
        stop.wait(1.0)


def latency_percentiles() -> tuple[float, float, float]:
    cutoff = time.monotonic() - LATENCY_WINDOW_S
    merged = HdrHistogram(1, 3_600_000_000, 3)
    with _state_lock:
        while latency_ring and latency_ring[0][0] < cutoff:
            latency_ring.popleft()
        for _, h in latency_ring:
            merged.add(h)
    if merged.get_total_count() == 0:
        return 0.0, 0.0, 0.0
    return tuple(merged.get_value_at_percentile(p) / 1000.0 for p in (50, 95, 99))  # type: ignore[return-value]


def sampler() -> None:
    now_epoch = time.time()
    stop.wait(SAMPLE_EVERY_S - (now_epoch % SAMPLE_EVERY_S))
    last_enq = last_cmp = 0
    last_tick = time.monotonic()
    while not stop.is_set():
        next_epoch = (int(time.time()) // SAMPLE_EVERY_S + 1) * SAMPLE_EVERY_S
        if stop.wait(max(0.0, next_epoch - time.time())):
            break
        t = time.monotonic()
        elapsed = max(0.001, t - last_tick)
        last_tick = t
        with _state_lock:
            enq, cmp_, depth, target = (
                state["enqueued"], state["completed"], state["queue_depth"], state["target_rate"]
            )
        enq_rate = (enq - last_enq) / elapsed
        cmp_rate = (cmp_ - last_cmp) / elapsed
        last_enq, last_cmp = enq, cmp_
        ts = now_iso()
        p50, p95, p99 = latency_percentiles()
        metrics = [
            ("claim_p50_ms", p50, LATENCY_WINDOW_S),
            ("claim_p95_ms", p95, LATENCY_WINDOW_S),
            ("claim_p99_ms", p99, LATENCY_WINDOW_S),
            ("enqueue_rate", enq_rate, float(SAMPLE_EVERY_S)),
            ("completion_rate", cmp_rate, float(SAMPLE_EVERY_S)),
        ]
        if OBSERVER:
            metrics += [
                ("queue_depth", float(depth), 0.0),
                ("producer_target_rate", target, 0.0),
            ]
        for metric, value, window_s in metrics:
            emit(
                {
                    "t": ts,
                    "system": SYSTEM,
                    "kind": "adapter",
                    "subject_kind": "adapter",
                    "subject": "",
                    "metric": metric,
                    "value": value,
                    "window_s": window_s,
                }
            )


# ─── main ───────────────────────────────────────────────────────────────


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    # The system's own install path: Django migrations.
    for attempt in range(30):
        try:
            call_command("migrate", interactive=False, verbosity=0)
            break
        except Exception as exc:
            log(f"migrate failed ({exc}); retrying")
            connection.close()
            time.sleep(1.0)
    connection.close()

    try:
        from importlib.metadata import version

        aio_version = version("aio_async")
    except Exception:
        aio_version = aio_async.__version__
    db_name = (urlparse(os.environ["DATABASE_URL"]).path or "/").lstrip("/") or "aio_async_bench"
    emit(
        {
            "kind": "descriptor",
            "system": SYSTEM,
            "event_tables": ["public.aio_async_job"],
            "event_indexes": [
                "public.aio_async_job_pkey",
                "public.aio_async_job_claim",
                "public.aio_async_job_lease",
                "public.aio_async_job_succeeded",
            ],
            "extensions": [],
            "version": f"aio_async {aio_version}, django {django.get_version()}",
            "schema_version": "django-migrations",
            "db_name": db_name,
            "aio_async_path": os.path.dirname(os.path.abspath(aio_async.__file__)),
            "python": sys.executable,
            "worker": " ".join(worker_argv()[1:]),
            "started_at": now_iso(),
        }
    )

    holder = {"proc": start_worker()}
    tokens = None
    threads = []
    if PRODUCER_MODE == "fixed" and PRODUCER_PACING == "harness":
        tokens = TokenBucket()
        threads.append(threading.Thread(target=tokens.reader, name="stdin", daemon=True))
    threads += [
        threading.Thread(target=producer, args=(tokens,), name="producer", daemon=True),
        threading.Thread(target=worker_supervisor, args=(holder,), name="supervisor", daemon=True),
        threading.Thread(target=sampler, name="sampler", daemon=True),
    ]
    if OBSERVER or PRODUCER_MODE == "depth-target":
        threads.append(threading.Thread(target=depth_poller, name="depth", daemon=True))
    threads.append(threading.Thread(target=completion_poller, name="completions", daemon=True))
    for th in threads:
        th.start()

    while not stop.wait(0.5):
        pass

    proc: subprocess.Popen = holder["proc"]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=4.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log(f"shutdown; worker restarts during run: {state['worker_restarts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
