"""Worker processes for the fault tests: start, signal, kill, and read what they said."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def environment(db_name: str, settings: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a subprocess that uses the test database ``db_name``."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env["AIO_ASYNC_TEST_DB_NAME"] = db_name
    env["AIO_ASYNC_TEST_SETTINGS"] = json.dumps(settings or {})
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class Worker:
    """``python -m aio_async run`` as a subprocess, its output kept in a file."""

    def __init__(self, env: dict[str, str], *arguments: str) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="aio-async-worker-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aio_async", "--settings", "tests.settings", "run", *arguments],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid

    @property
    def output(self) -> str:
        """Everything the worker printed so far."""
        return Path(self.log.name).read_text(errors="replace")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum``."""
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def children(self) -> list[int]:
        """The pids of the processes this one started (a supervisor's workers)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.pid:
                found.append(int(stat.parent.name))
        return found

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait for the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            message = f"no exit within {timeout} s of SIGTERM; it printed:\n{self.output}"
            raise AssertionError(message) from None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            # A supervisor's workers run in sessions of their own: a test that failed must not
            # leave them running on the test database for the tests after it.
            for pid in self.children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.send_signal(signal.SIGCONT)
            self.kill()
        self.log.close()
        os.unlink(self.log.name)


def wait_until(predicate: Callable[[], bool], timeout: float = 30, message: str = "condition") -> None:
    """Poll ``predicate`` until it holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{message} not met within {timeout} s")
