"""``run --processes N``: exactly N workers, built from the parsed options; abbreviations refused.

The process tree is read from ``/proc``; whatever a test started is stopped and killed by its
process ids afterwards, even when a broken supervisor kept spawning.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from aio_async import schedule
from tests.acceptance.test_cli import ROOT, environment, wait_until
from tests.app import tasks
from tests.app.models import Record

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc"),
]


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # The command name, in parentheses, may hold spaces: the fields follow the last ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """The live processes below ``pid``."""
    parents = _parents()
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.add(child)
                todo.append(child)
    return found


def command_line(pid: int) -> list[str]:
    """The arguments ``pid`` was started with."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def kill_tree(process: subprocess.Popen[str]) -> None:
    """Freeze the process and everything below it (so that nothing respawns), then kill them all."""
    frozen: set[int] = set()
    while True:
        tree = ({process.pid} if process.poll() is None else set()) | descendants(process.pid)
        if tree <= frozen:
            break
        for pid in tree - frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        frozen |= tree
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(10)


@contextlib.contextmanager
def started(*arguments: str, **extra: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``python -m aio_async ARGUMENTS``, its stdout and stderr in a file; killed at the end."""
    with tempfile.NamedTemporaryFile(prefix="aio-async-supervisor-", suffix=".log", delete=False) as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "aio_async", *arguments],
            cwd=ROOT,
            env=environment(**extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        yield process, Path(log.name)
    finally:
        kill_tree(process)
        os.unlink(log.name)


def exit_code(process: subprocess.Popen[str], timeout: float = 30) -> int:
    """The exit code, or a failure naming how many processes it left running."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running, with {len(descendants(process.pid))} processes below") from None


def test_an_abbreviated_processes_option_is_refused_and_starts_nothing() -> None:
    with started("--settings", "tests.settings", "run", "--proc", "2") as (process, log):
        code = exit_code(process)
        output = log.read_text()
    assert code == 2, output
    assert "error: unrecognized arguments: --proc 2" in output
    assert len(output.strip().splitlines()) == 1, output
    assert "Worker process" not in output


def test_a_bad_option_stops_the_supervisor_before_any_worker_starts() -> None:
    arguments = ["--settings", "tests.settings", "run", "--processes", "2", "--shutdown-timeout", "-1"]
    with started(*arguments) as (process, log):
        code = exit_code(process)
        output = log.read_text()
    assert code == 2, output
    assert output.splitlines() == [
        "python -m aio_async run: error: --shutdown-timeout must be a number >= 0.0, got -1.0."
    ]


def test_processes_runs_exactly_that_many_workers_with_the_parents_options() -> None:
    # --settings after the verb, as with manage.py; the workers serve only "mail".
    with started("run", "--settings", "tests.settings", "--processes", "2", "--queue", "mail") as (
        process,
        log,
    ):
        wait_until(lambda: log.read_text().count("started on queues mail") == 2, timeout=60)
        schedule(tasks.write, ["in mail"], queue="mail")
        schedule(tasks.write, ["in default"])
        wait_until(lambda: Record.objects.filter(key="in mail").exists())
        time.sleep(1.0)  # a worker that were a supervisor again would have spawned by now
        children = descendants(process.pid)
        assert len(children) == 2, [command_line(pid) for pid in children]
        for pid in children:
            arguments = command_line(pid)
            assert arguments[1:3] == ["-m", "aio_async"]
            assert not any(argument.startswith("--proc") for argument in arguments), arguments
            assert "--queue=mail" in arguments
            assert "--settings=tests.settings" in arguments
            assert not descendants(pid)
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        output = log.read_text()
    assert code == 0, output
    assert len([line for line in output.splitlines() if "Worker process" in line and "started" in line]) == 2
    assert not Record.objects.filter(key="in default").exists()


def replacement(process: subprocess.Popen[str], survivor: int, killed: int) -> int:
    """The worker the supervisor started in place of ``killed``."""
    wait_until(lambda: len(descendants(process.pid) - {survivor, killed}) == 1, timeout=30)
    (child,) = descendants(process.pid) - {survivor, killed}
    return child


def test_a_worker_dead_before_the_stop_does_not_make_the_stop_unclean() -> None:
    # One worker killed three times within seconds waits 2 s for its restart (back-off); the
    # SIGTERM arrives in that wait. Its death was dealt with: the stop itself was clean.
    with started("--settings", "tests.settings", "run", "--processes", "2") as (process, log):
        wait_until(lambda: log.read_text().count("started on queues") == 2, timeout=60)
        (survivor, child) = sorted(descendants(process.pid))
        os.kill(child, signal.SIGKILL)
        child = replacement(process, survivor, child)
        os.kill(child, signal.SIGKILL)
        child = replacement(process, survivor, child)
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: descendants(process.pid) == {survivor}, timeout=30)
        process.send_signal(signal.SIGTERM)
        code = exit_code(process)
        output = log.read_text()
    assert code == 0, output
    assert f"exited with {-signal.SIGKILL} before the stop; not restarting it" in output, output


def test_a_stop_that_arrives_while_a_worker_is_being_restarted_reaches_the_new_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The supervisor runs here, in the test's main thread, so that the SIGTERM can be sent at
    # the one moment that matters: the replacement worker started, not yet in the supervisor's
    # books. A stop passed on from the signal handler there would miss the new worker, and the
    # supervisor would wait for it forever.
    from aio_async import supervisor

    monkeypatch.setenv("AIO_ASYNC_TEST_DB_NAME", str(connection.settings_dict["NAME"]))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.chdir(ROOT)
    spawned: list[subprocess.Popen[bytes]] = []
    spawn = supervisor._Child._spawn

    def spawn_then_stop(child: supervisor._Child) -> subprocess.Popen[bytes]:
        process = spawn(child)
        spawned.append(process)
        if len(spawned) == 3:  # the replacement of the killed worker
            os.kill(os.getpid(), signal.SIGTERM)
        return process

    def kill_one_then_watch() -> None:
        wait_until(lambda: len(spawned) == 2, timeout=30)
        time.sleep(0.5)
        spawned[0].kill()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(process.poll() is None for process in spawned):
            time.sleep(0.1)
        for process in spawned:  # a supervisor that lost a worker: end the test, not the run
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    monkeypatch.setattr(supervisor._Child, "_spawn", spawn_then_stop)
    watcher = threading.Thread(target=kill_one_then_watch, daemon=True)
    watcher.start()
    started_at = time.monotonic()
    code = supervisor.supervise(2, ["--settings=tests.settings", "run", "--concurrency=1"])
    watcher.join(70)
    assert len(spawned) == 3
    # Each stopped cleanly, or died of the SIGTERM before its start-up had installed a handler.
    assert all(process.returncode in (0, -signal.SIGTERM) for process in spawned[1:])
    assert code == 0
    assert time.monotonic() - started_at < 60


def test_workers_stop_when_their_supervisor_is_killed() -> None:
    # SIGKILL leaves the supervisor no time to stop its workers: they notice on their own.
    with started("--settings", "tests.settings", "run", "--processes", "2") as (process, log):
        wait_until(lambda: log.read_text().count("started on queues") == 2, timeout=60)
        workers = descendants(process.pid)
        assert len(workers) == 2
        process.kill()
        process.wait(10)
        wait_until(lambda: not workers & set(_parents()), timeout=15)
        output = log.read_text()
    assert output.count(f"The supervisor (pid {process.pid}) is gone; stopping this worker") == 2, output
    assert output.count("stopped: no job run") == 2, output
