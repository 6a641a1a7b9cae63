#!/usr/bin/env python3
"""Seconds from the server accepting connections again to the first claim /
completion, for a chaos_postgres_restart run (aio_async systems).

    restart_timing.py RUN_DIR   -> writes RUN_DIR/restart_timing.json

Sources:
- the restart phase window of each system: raw.csv (`sampled_at` of the rows
  labelled `restart` and `recovery`);
- when the server was stopped / accepted connections again: RUN_DIR/server.log
  (the cluster's log for the run window, written by run_cell.sh; the lines
  "received fast shutdown request" and "database system is ready to accept
  connections", millisecond timestamps);
- first claim / completion after that: the system's own job table
  (min(started), min(finished) of aio_async_job rows >= ready), read right after
  the run, before a later run recreates the database. Needs the cluster up.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import sys
from pathlib import Path

import psycopg

PORT = int(os.environ.get("BENCH_PG_PORT", "55700"))
LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) (\S+) \[\d+\] LOG:\s+(.*)$")


def parse_iso(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def server_events(path: Path) -> list[tuple[dt.datetime, str]]:
    out = []
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_RE.match(line)
        if not m:
            continue
        ts = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.timezone.utc)
        msg = m.group(3)
        if "ready to accept connections" in msg:
            out.append((ts, "ready"))
        elif "received fast shutdown request" in msg:
            out.append((ts, "shutdown"))
    return out


def phase_windows(raw_csv: Path) -> dict[str, dict[str, tuple[dt.datetime, dt.datetime]]]:
    win: dict[str, dict[str, list[dt.datetime]]] = {}
    with raw_csv.open() as fh:
        for row in csv.DictReader(fh):
            t = parse_iso(row["sampled_at"])
            w = win.setdefault(row["system"], {}).setdefault(row["phase_label"], [t, t])
            w[0] = min(w[0], t)
            w[1] = max(w[1], t)
    return {s: {p: (a, b) for p, (a, b) in d.items()} for s, d in win.items()}


def main() -> int:
    run_dir = Path(sys.argv[1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    windows = phase_windows(run_dir / "raw.csv")
    events = server_events(run_dir / "server.log")
    result: dict[str, dict] = {}
    for system, entry in (manifest.get("adapters") or {}).items():
        w = windows.get(system, {})
        if "restart" not in w:
            continue
        # The restart phase starts with the stop: the first shutdown request
        # after the last baseline sample, then the first "ready" after it.
        lo = w.get("baseline", w["restart"])[1]
        hi = w.get("recovery", w["restart"])[1]
        stop = next((t for t, k in events if k == "shutdown" and lo <= t <= hi), None)
        ready = next((t for t, k in events if k == "ready" and stop and stop < t <= hi), None)
        rec: dict = {
            "server_stop_requested": stop.isoformat() if stop else None,
            "server_ready": ready.isoformat() if ready else None,
            "source": "server.log (ready/shutdown lines) + aio_async_job started/finished",
        }
        db = (entry.get("db_name") or f"{system}_bench")
        if ready:
            try:
                with psycopg.connect(
                    f"postgres://bench:bench@localhost:{PORT}/{db}", connect_timeout=5
                ) as conn:
                    row = conn.execute(
                        "SELECT min(started) FILTER (WHERE started >= %s),"
                        " min(finished) FILTER (WHERE finished >= %s AND status = 'succeeded'),"
                        " max(finished) FILTER (WHERE finished < %s AND status = 'succeeded')"
                        " FROM aio_async_job",
                        (ready, ready, stop),
                    ).fetchone()
                first_claim, first_done, last_done_before = row
                rec["last_completion_before_stop"] = last_done_before.isoformat() if last_done_before else None
                rec["first_claim_after_ready"] = first_claim.isoformat() if first_claim else None
                rec["first_completion_after_ready"] = first_done.isoformat() if first_done else None
                rec["ready_to_first_claim_s"] = (
                    round((first_claim - ready).total_seconds(), 3) if first_claim else None
                )
                rec["ready_to_first_completion_s"] = (
                    round((first_done - ready).total_seconds(), 3) if first_done else None
                )
            except Exception as exc:  # database gone / not an aio_async table
                rec["db_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        result[system] = rec
    (run_dir / "restart_timing.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
