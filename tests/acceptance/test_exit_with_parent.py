"""``run --exit-with-parent`` (or ``AIO_ASYNC_EXIT_WITH_PARENT=1``): a worker whose parent is killed stops.

A small parent process starts the worker and prints its pid; the test SIGKILLs that parent.
The worker, handed to another process, is watched through ``/proc``, and killed by its pid
when it should have kept running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aio_async import schedule
from tests.acceptance.test_cli import ROOT, environment, run, wait_until
from tests.app import tasks
from tests.app.models import Record

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc"),
]

#: The parent: starts the worker with its arguments, its output in a file; prints its pid; waits.
PARENT = """
import subprocess, sys, time
with open(sys.argv[1], "wb") as log:
    worker = subprocess.Popen(
        [sys.executable, "-m", "aio_async", "--settings", "tests.settings", "run", *sys.argv[2:]],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
print(worker.pid, flush=True)
time.sleep(600)
"""


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie nobody reaped yet)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("asked", ["flag", "environment", "supervisor", "neither"])
def test_a_worker_asked_to_exits_with_its_killed_parent_as_on_sigterm(asked: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    arguments = {
        "flag": ["--exit-with-parent"],
        "supervisor": ["--exit-with-parent", "--processes", "2"],
    }.get(asked, [])
    env = environment(AIO_ASYNC_EXIT_WITH_PARENT="1" if asked == "environment" else "0")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(log), *arguments],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    worker = 0
    supervised: list[int] = []
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        wait_until(lambda: log.read_text().count("started on queues") == (2 if asked == "supervisor" else 1))
        supervised = children(worker)
        marker = tmp_path / "started"
        schedule(tasks.mark_then_sleep, ["while its parent died", 1.0, str(marker)])
        wait_until(marker.exists)
        parent.kill()
        parent.wait(10)
        if asked == "neither":
            time.sleep(3)
            assert running(worker), log.read_text()
            assert "is gone" not in log.read_text()
            return
        began = time.monotonic()
        wait_until(lambda: not running(worker), timeout=15)
        print(
            f"the worker exited {time.monotonic() - began:.2f} s after its parent was killed"
        )  # shown with -s
    finally:
        parent.stdout.close()  # type: ignore[union-attr]
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        for pid in [worker, *supervised]:
            if pid and running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    output = log.read_text()
    # Stopped as on SIGTERM: the running job finished and was recorded; a clean stop.
    assert "Received SIGTERM" in output or "The parent process" in output, output
    assert "Stopping worker" in output
    assert Record.objects.filter(key="while its parent died").exists()
    assert "Traceback" not in output


def test_a_bad_exit_with_parent_variable_is_one_line_and_exit_code_2() -> None:
    result = run("-m", "aio_async", "--settings", "tests.settings", "run", AIO_ASYNC_EXIT_WITH_PARENT="yes")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "python -m aio_async run: error: AIO_ASYNC_EXIT_WITH_PARENT must be 1 (stop once the parent "
        "process is gone) or 0, got 'yes'"
    ]
