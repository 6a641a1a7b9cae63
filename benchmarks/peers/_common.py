"""Helpers used by both peer benchmark scripts (stdlib + psycopg only)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

FAMILIES = ("enqueue", "drain", "io", "latency")


def parse_args(description: str) -> argparse.Namespace:
    """Parse the command line common to every peer script."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dsn", required=True, help="PostgreSQL DSN of the benchmark database")
    p.add_argument("--runs", type=int, default=3, help="measurements per figure (median is reported)")
    p.add_argument("--n", type=int, default=5000, help="jobs for the enqueue and drain scenarios")
    p.add_argument("--n-io", type=int, default=500, help="jobs for the I/O scenarios")
    p.add_argument("--n-lat", type=int, default=50, help="jobs for the latency scenarios")
    p.add_argument("--out", required=True, help="JSONL file to append one row per figure to")
    p.add_argument("--logs", required=True, help="folder for worker logs and latency files")
    p.add_argument("--only", default="", help=f"comma-separated scenario prefixes, e.g. {','.join(FAMILIES)}")
    args = p.parse_args()
    args.only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    os.makedirs(args.logs, exist_ok=True)
    return args


def wanted(only: tuple[str, ...], *keys: str) -> bool:
    """Tell whether any of the scenario keys passes the --only prefix filter."""
    return not only or any(k.startswith(p) for k in keys for p in only)


_conns: dict[str, psycopg.Connection[Any]] = {}


def _conn(dsn: str) -> psycopg.Connection[Any]:
    """Return this process's autocommit connection to dsn (one per DSN, reopened if closed)."""
    conn = _conns.get(dsn)
    if conn is None or conn.closed:
        conn = _conns[dsn] = psycopg.connect(dsn, autocommit=True)
    return conn


def scalar(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """Run one query and return the first column of its first row."""
    row = _conn(dsn).execute(sql, params).fetchone()
    return row[0] if row else None


def fetchone(dsn: str, sql: str) -> tuple[Any, ...]:
    """Run one query and return its first row."""
    row = _conn(dsn).execute(sql).fetchone()
    assert row is not None
    return tuple(row)


def execute(dsn: str, sql: str) -> None:
    """Run one statement."""
    _conn(dsn).execute(sql)


def pct(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile of values (q in 0..1)."""
    s = sorted(values)
    if not s:
        return float("nan")
    return s[max(0, math.ceil(q * len(s)) - 1)]


def record(
    out: str,
    system: str,
    version: str,
    scenario: str,
    unit: str,
    runs: list[float],
    extra: dict[str, Any],
    config: str = "",
    settings: str = "",
) -> dict[str, Any]:
    """Append one figure to the JSONL file and print a one-line summary.

    ``config`` names the system's configuration (``default``, ``tuned``...) and ``settings``
    spells it out, so that every line says how it was measured.
    """
    row = {
        "system": system,
        "config": config,
        "settings": settings,
        "version": version,
        "scenario": scenario,
        "unit": unit,
        "runs": [round(v, 3) for v in runs],
        "median": round(statistics.median(runs), 3),
        "extra": extra,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(
        f"[{system}] {scenario}: median {row['median']} {unit}, runs {row['runs']}, extra {extra}", flush=True
    )
    return row


def spawn(cmd: list[str], log_path: str, env: dict[str, str], cwd: str) -> subprocess.Popen[bytes]:
    """Start a worker in its own session (so its process group can be stopped as a whole)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=cwd,
            start_new_session=True,
        )


def _killpg(pgid: int, sig: int) -> None:
    """Send sig to a process group, ignoring one that is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the worker's process group, SIGKILL it after timeout seconds."""
    _killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _killpg(proc.pid, signal.SIGKILL)  # leftover children of a leader that exited


def wait_for(
    pred: Callable[[], bool],
    timeout: float,
    proc: subprocess.Popen[bytes],
    log_path: str,
    interval: float = 0.05,
) -> float:
    """Poll pred() until true and return time.time() then; raise if the worker died or timeout passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.time()
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited early (rc={proc.returncode}), see {log_path}")
        time.sleep(interval)
    raise TimeoutError(f"condition not reached within {timeout:.0f} s, see {log_path}")


def read_latency_file(path: str) -> list[tuple[float, float]]:
    """Read 'enqueue_time start_time' lines into pairs (the warm-up line, enqueue 0, skipped)."""
    with open(path) as f:
        pairs = [tuple(float(x) for x in line.split()) for line in f]
    return [(enq, start) for enq, start in pairs if enq > 0]


def py_version() -> str:
    """Return the running Python's version, e.g. '3.11.7'."""
    return sys.version.split()[0]


def measure_drain(
    args: argparse.Namespace,
    label: str,
    n: int,
    reset: Callable[[], None],
    prefill: Callable[[int], None],
    remaining: Callable[[], int],
    window: Callable[[], tuple[Any, ...]],
    start_worker: Callable[[str], subprocess.Popen[bytes]],
) -> tuple[list[float], list[float]]:
    """Run a drain args.runs times; return (steady jobs/s from DB timestamps, jobs/s from worker spawn)."""
    steady, from_spawn = [], []
    for r in range(args.runs):
        reset()
        prefill(n)  # not timed
        assert remaining() == n, (remaining(), n)
        log = os.path.join(args.logs, f"{label}-r{r}.log")
        t_spawn = time.time()
        proc = start_worker(log)
        try:
            wait_for(lambda: remaining() == 0, 60 + n / 20, proc, log, interval=0.1)
        finally:
            stop(proc)
        first, last, done = window()  # epoch of first start, epoch of last finish, jobs succeeded
        assert done == n, f"{done} of {n} jobs succeeded, see {log}"
        steady.append(n / (float(last) - float(first)))
        from_spawn.append(n / (float(last) - t_spawn))
    return steady, from_spawn


def measure_latency(
    args: argparse.Namespace,
    label: str,
    reset: Callable[[], None],
    remaining: Callable[[], int],
    enqueue: Callable[[float], None],
    start_worker: Callable[[str, str], subprocess.Popen[bytes]],
) -> dict[str, list[float]]:
    """Measure pick-up latency of an idle worker args.runs times, in ms per run.

    Each job carries the time its enqueue call began; the time the call returned (its
    transaction committed) is noted here. ``p50``/``p95`` are start minus that commit;
    ``call_p50``/``call_p95`` start minus the call, so they include the enqueue itself.
    """
    out: dict[str, list[float]] = {"p50": [], "p95": [], "call_p50": [], "call_p95": [], "max": []}
    for r in range(args.runs):
        reset()
        log = os.path.join(args.logs, f"{label}-r{r}.log")
        lat_file = os.path.join(args.logs, f"{label}-r{r}.txt")
        if os.path.exists(lat_file):
            os.remove(lat_file)
        proc = start_worker(log, lat_file)
        committed: dict[float, float] = {}
        try:
            enqueue(0.0)  # warm-up job, ignored by read_latency_file
            wait_for(lambda: remaining() == 0, 60, proc, log)
            time.sleep(0.5)
            for _ in range(args.n_lat):
                called = time.time()
                enqueue(called)
                committed[called] = time.time()
                time.sleep(0.2)
            wait_for(lambda: remaining() == 0, 60, proc, log)
        finally:
            stop(proc)
        pairs = read_latency_file(lat_file)
        assert len(pairs) == args.n_lat, (len(pairs), args.n_lat)
        since_commit = [start - committed[enq] for enq, start in pairs]
        since_call = [start - enq for enq, start in pairs]
        out["p50"].append(pct(since_commit, 0.5) * 1000)
        out["p95"].append(pct(since_commit, 0.95) * 1000)
        out["call_p50"].append(pct(since_call, 0.5) * 1000)
        out["call_p95"].append(pct(since_call, 0.95) * 1000)
        out["max"].append(max(since_commit) * 1000)
    return out


def emit_latency(
    emit: Callable[..., None], measured: dict[str, list[float]], scenario: str = "latency", **how: Any
) -> None:
    """Record p50 and p95 since commit, with the figures since the enqueue call beside them."""
    emit(f"{scenario}_p50", "ms", measured["p50"], **how, since_call_ms=measured["call_p50"])
    emit(
        f"{scenario}_p95",
        "ms",
        measured["p95"],
        **how,
        since_call_ms=measured["call_p95"],
        max_ms=round(max(measured["max"]), 3),
    )


def banner(msg: str) -> None:
    """Print a progress line on stderr."""
    print(f"=== {msg}", file=sys.stderr, flush=True)
