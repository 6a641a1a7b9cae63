"""``python -m aio_async`` with the time of each of the worker's claims written down.

The held-snapshot and suspended scenarios run their worker through this module: it wraps
the store's ``claim`` (whatever statements it runs) in a clock, and appends
``end duration_ms jobs`` lines (end in epoch seconds) to the file named by
``BENCH_CLAIM_FILE``, about once a second and at exit. With ``BENCH_WAKE_FILE`` it does the
same for the store's ``wake_suspended`` (the pass that queues suspended jobs come due, once
per poll interval; ``jobs`` is then how many it woke). The worker is otherwise
``python -m aio_async`` unchanged.
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

#: The lines noted since the last flush, by file.
_lines: dict[str, list[str]] = {}
_flushed = [time.monotonic()]


def _flush() -> None:
    """Append the calls noted since the last flush to their files."""
    for path, lines in _lines.items():
        if lines:
            with open(path, "a") as out:
                out.write("".join(lines))
            lines.clear()
    _flushed[0] = time.monotonic()


def _timed(method: Any, path: str) -> Any:
    """``method`` with its wall time and the length of what it returns noted in ``path``."""
    lines = _lines.setdefault(path, [])

    @functools.wraps(method)
    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        returned = await method(self, *args, **kwargs)
        took = time.perf_counter() - started
        lines.append(f"{time.time()!r} {took * 1000:.3f} {len(returned)}\n")
        if time.monotonic() - _flushed[0] >= 1.0:
            _flush()  # a short append, once a second
        return returned

    return timed


for _variable, _name in (("BENCH_CLAIM_FILE", "claim"), ("BENCH_WAKE_FILE", "wake_suspended")):
    if os.environ.get(_variable) and hasattr(database.DatabaseStore, _name):
        setattr(
            database.DatabaseStore,
            _name,
            _timed(getattr(database.DatabaseStore, _name), os.environ[_variable]),
        )
atexit.register(_flush)

if __name__ == "__main__":
    sys.exit(main())
