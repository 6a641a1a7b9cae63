"""procrastinate app and tasks for procrastinate_bench.py (the worker loads it as procrastinate_app.app)."""

from __future__ import annotations

import asyncio
import os
import time

from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ["BENCH_PG_DSN"]))


def _append_line(path: str, line: str) -> None:
    """Append one line to a file."""
    with open(path, "a") as f:
        f.write(line + "\n")


@app.task(name="noop")
async def noop() -> None:
    """Do nothing."""


@app.task(name="sleep50")
async def sleep50() -> None:
    """Wait 50 ms without blocking the event loop."""
    await asyncio.sleep(0.05)


@app.task(name="stamp")
async def stamp(enq: float) -> None:
    """Append 'enqueue_time start_time' to the file named by BENCH_LAT_FILE."""
    _append_line(os.environ["BENCH_LAT_FILE"], f"{enq!r} {time.time()!r}")
