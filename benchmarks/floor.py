"""The floors: what this machine's PostgreSQL, and a minimal asyncio + psycopg loop, can do.

``pgbench`` runs one single-row UPDATE per transaction (one round trip and one commit per
job: the physical limit of a queue that commits each job); the loop claims one job with
``FOR UPDATE SKIP LOCKED`` and completes it, two transactions per job, with no framework.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from urllib.parse import urlparse

import psycopg

from benchmarks.peers._common import record


def pgbench(dsn: str, runs: int, seconds: int, out: str) -> None:
    """One single-row UPDATE per transaction, 1 client and 8 clients."""
    binary = shutil.which("pgbench") or next(
        iter(sorted(__import__("glob").glob("/usr/lib/postgresql/*/bin/pgbench"))), None
    )
    if binary is None:
        print("pgbench not found: install postgresql-contrib for the floor", file=sys.stderr)
        return
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS bench_floor")
        db.execute("CREATE TABLE bench_floor (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0)")
        db.execute("INSERT INTO bench_floor SELECT g, 0 FROM generate_series(1, 10000) g")
        db.execute("VACUUM ANALYZE bench_floor")
    url = urlparse(dsn)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write("\\set id random(1, 10000)\nUPDATE bench_floor SET n = n + 1 WHERE id = :id;\n")
    ver = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    for clients, threads in ((1, 1), (8, 2)):
        tps = []
        for _ in range(runs):
            output = subprocess.run(
                [
                    binary,
                    "-n",
                    "-f",
                    script.name,
                    "-c",
                    str(clients),
                    "-j",
                    str(threads),
                    "-T",
                    str(seconds),
                    "-h",
                    url.hostname or "127.0.0.1",
                    "-p",
                    str(url.port or 5432),
                    "-U",
                    url.username or "postgres",
                    url.path.lstrip("/"),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            found = re.search(r"tps = ([0-9.]+)", output)
            tps.append(float(found.group(1)) if found else 0.0)
        how = f"pgbench -n -T {seconds}, -c 1 -j 1 and -c 8 -j 2: one single-row UPDATE per transaction"
        record(out, "pgbench", ver, f"floor_update_c{clients}", "tps", tps, {}, "floor", how)
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("DROP TABLE bench_floor")


CLAIM = (
    "UPDATE floor_jobs SET status = 'doing', started = now() WHERE id IN (SELECT id FROM floor_jobs "
    "WHERE status = 'todo' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id"
)
DONE = "UPDATE floor_jobs SET status = 'done', finished = now() WHERE id = %s"


async def _claimer(dsn: str) -> int:
    done = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as db:
        while True:
            row = await (await db.execute(CLAIM)).fetchone()
            if row is None:
                return done
            await db.execute(DONE, (row[0],))
            done += 1


async def _loop(dsn: str, jobs: int, claimers: int) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as db:
        await db.execute("DROP TABLE IF EXISTS floor_jobs")
        await db.execute(
            "CREATE TABLE floor_jobs (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT 'todo', "
            "started timestamptz, finished timestamptz)"
        )
        await db.execute("CREATE INDEX ON floor_jobs (id) WHERE status = 'todo'")
        await db.execute(
            f"INSERT INTO floor_jobs (status) SELECT 'todo' FROM generate_series(1, {int(jobs)})"
        )
        await db.execute("VACUUM ANALYZE floor_jobs")
    started = time.perf_counter()
    total = sum(await asyncio.gather(*(_claimer(dsn) for _ in range(claimers))))
    assert total == jobs, (total, jobs)
    return jobs / (time.perf_counter() - started)


def python_loop(dsn: str, runs: int, jobs: int, out: str) -> None:
    """Claim and complete one job per round trip: 1 claimer, then 10, in one process."""
    ver = f"psycopg {version('psycopg')} (AsyncConnection), py {sys.version.split()[0]}"
    for claimers in (1, 10):
        rates = [asyncio.run(_loop(dsn, jobs, claimers)) for _ in range(runs)]
        how = (
            "1 or 10 autocommit AsyncConnections in one process (psycopg's defaults), each claiming "
            "one job (FOR UPDATE SKIP LOCKED) and completing it"
        )
        record(out, "asyncio+psycopg loop", ver, f"floor_loop_c{claimers}", "jobs/s", rates, {}, "floor", how)
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("DROP TABLE floor_jobs")


def main() -> None:
    """Run both floors."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    pgbench(options.dsn, options.runs, options.seconds, options.out)
    python_loop(options.dsn, options.runs, options.n, options.out)


if __name__ == "__main__":
    main()
