"""``python -m aio_async`` with the time of each of the worker's claims written down.

The held-snapshot scenario runs its worker through this module: it wraps the store's
``claim`` (whatever statements it runs) in a clock, and appends ``end duration_ms jobs`` lines
(end in epoch seconds) to the file named by ``BENCH_CLAIM_FILE``, about once a second and at
exit. The worker is otherwise ``python -m aio_async`` unchanged.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import time
from typing import Any

from aio_async.cli import main
from aio_async.store import database

_lines: list[str] = []
_flushed = [time.monotonic()]


def _flush() -> None:
    """Append the claims noted since the last flush to the file."""
    if _lines:
        with open(os.environ["BENCH_CLAIM_FILE"], "a") as out:
            out.write("".join(_lines))
        _lines.clear()
    _flushed[0] = time.monotonic()


def _timed(claim: Any) -> Any:
    """``claim`` with its wall time and the number of jobs it leased noted."""

    @functools.wraps(claim)
    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        attempts = await claim(self, *args, **kwargs)
        took = time.perf_counter() - started
        _lines.append(f"{time.time()!r} {took * 1000:.3f} {len(attempts)}\n")
        if time.monotonic() - _flushed[0] >= 1.0:
            _flush()  # a short append, once a second
        return attempts

    return timed


if os.environ.get("BENCH_CLAIM_FILE") and hasattr(database.DatabaseStore, "claim"):
    database.DatabaseStore.claim = _timed(database.DatabaseStore.claim)  # type: ignore[method-assign]
    atexit.register(_flush)

if __name__ == "__main__":
    sys.exit(main())
