"""``python -m benchmarks.compare OLD NEW``: aio_async's own figures for two source trees, alternated.

A change that reshapes the code must not slow it: this runs ``benchmarks.aio`` (Django's
default settings) from the tree ``OLD`` and the tree ``NEW`` (two ``git worktree``s, say),
round after round, alternating which goes first, each on a database of its own, in one
invocation on one machine, and prints each figure's median per tree and their ratio (above
1: NEW is better). Figures on a shared 2-core machine move by 20 % between runs of the same
code: compare medians of several rounds, never one run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg


def _database(dsn: str, name: str) -> str:
    """The DSN of database ``name`` beside ``dsn``'s, created if missing."""
    with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, dbname="postgres"), autocommit=True) as db:
        if not db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            db.execute(f'CREATE DATABASE "{name}"')
    # benchmarks.aio reads a URL (its database name from the path), not a key=value string.
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    user = params.get("user", "postgres")
    password = f":{params['password']}" if params.get("password") else ""
    return (
        f"postgresql://{user}{password}@{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/{name}"
    )


def main() -> None:
    """Run the rounds, then print the medians and ratios as a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("old", type=Path, help="the source tree measured as 'before'")
    parser.add_argument("new", type=Path, help="the source tree measured as 'after'")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/aio_async_bench")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="enqueue,drain,io,latency")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--n-lat", type=int, default=50)
    options = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="aio_async-compare-"))
    trees = {"old": options.old.resolve(), "new": options.new.resolve()}
    dsns = {label: _database(options.dsn, f"aio_async_compare_{label}") for label in trees}
    figures: dict[str, dict[str, list[float]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    units: dict[str, str] = {}
    for round_ in range(options.rounds):
        for label in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
            results = out / f"{label}-{round_}.jsonl"
            command = [
                sys.executable, "-m", "benchmarks.aio", "--dsn", dsns[label], "--config", "default",
                "--runs", "1", "--n", str(options.n), "--n-lat", str(options.n_lat),
                "--only", options.only, "--out", str(results), "--logs", str(out),
            ]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": str(trees[label])}
            subprocess.run(command, cwd=trees[label], env=env, check=True, capture_output=True)
            for line in results.read_text().splitlines():
                record = json.loads(line)
                figures[record["scenario"]][label].append(record["median"])
                units[record["scenario"]] = record["unit"]
            print(f"round {round_ + 1}: {label} measured", file=sys.stderr, flush=True)
    print("| figure | unit | before | after | after vs before (above 1: better) | runs |")
    print("|---|---|---:|---:|---:|---:|")
    for scenario, measured in figures.items():
        before, after = statistics.median(measured["old"]), statistics.median(measured["new"])
        ratio = before / after if units[scenario] == "ms" else after / before
        runs = len(measured["new"])
        print(f"| {scenario} | {units[scenario]} | {before:,.2f} | {after:,.2f} | {ratio:.3f} | {runs} |")


if __name__ == "__main__":
    main()
