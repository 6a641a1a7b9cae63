"""The entry points, run end to end as subprocesses against the test database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from aio_async import schedule
from aio_async.models import Job, Status
from tests.app import tasks
from tests.app.models import Record

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


def environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env["AIO_ASYNC_TEST_DB_NAME"] = str(connection.settings_dict["NAME"])
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run(*args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=environment(**extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_until(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_flush_runs_every_due_job_and_exits() -> None:
    for key in ("a", "b", "c"):
        schedule(tasks.write, [key])
    schedule(tasks.awrite, ["d"])
    result = run("-m", "aio_async", "--settings", "tests.settings", "flush")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"outcomes": {"succeeded": 4}}
    assert sorted(Record.objects.values_list("key", flat=True)) == ["a", "b", "c", "d"]
    assert not Job.objects.exclude(status=Status.SUCCEEDED).exists()


def test_flush_queue_management_command_with_filters_and_a_job_limit() -> None:
    schedule(tasks.write, ["w1"])
    schedule(tasks.write, ["w2"])
    schedule(tasks.add, [1, 2])
    admin = ["-m", "django", "flush_queue", "--settings", "tests.settings"]
    result = run(*admin, "--exclude", "write")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"outcomes": {"succeeded": 1}}
    result = run(*admin, "--filter", "write", "--jobs", "1")
    assert json.loads(result.stdout) == {"outcomes": {"succeeded": 1}}
    assert Record.objects.count() == 1
    assert run(*admin).returncode == 0
    assert Record.objects.count() == 2


def test_health_from_both_entry_points() -> None:
    schedule(tasks.write, ["h"])
    for args in (
        ["-m", "aio_async", "--settings", "tests.settings", "health"],
        ["-m", "django", "queue_health", "--settings", "tests.settings"],
    ):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert (report["all"], report["remaining"]) == (1, 1)
        assert report["by_name"]["tests.app.tasks.write"]["remaining"] == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_works_until_a_signal_then_lets_the_running_job_finish_and_exits_0(
    signum: int, tmp_path: Path
) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "aio_async", "--settings", "tests.settings", "run", "--concurrency", "2"],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        schedule(tasks.write, ["first"])
        wait_until(lambda: Record.objects.filter(key="first").exists())
        marker = tmp_path / "started"
        schedule(tasks.mark_then_sleep, ["during shutdown", 1.0, str(marker)])
        wait_until(marker.exists)  # running, not just claimed
        worker.send_signal(signum)
        stdout, stderr = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1]) == {"outcomes": {"succeeded": 2}}
    assert Record.objects.filter(key="during shutdown").exists()
    assert "Received " + signal.Signals(signum).name in stderr


def test_demo_runs_with_zero_set_up_on_embedded_sqlite(tmp_path: Path) -> None:
    env = environment()
    env.pop("AIO_ASYNC_TEST_DB_NAME")

    def demo() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aio_async", "demo"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    result = demo()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Jobs in the queue: 3 (not 4)" in result.stdout
    assert "flaky: succeeded after 3 attempt(s)" in result.stdout
    assert "this note must never exist" not in result.stdout.split("Notes in the database:")[1]
    assert "All done." in result.stdout
    assert (tmp_path / "aio_async.sqlite3").exists()
    # A second run on the same file works too (already migrated).
    again = demo()
    assert again.returncode == 0, again.stderr


def test_a_bad_setting_is_a_clear_error_with_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "bad_settings.py").write_text(
        "from tests.settings import *  # noqa\nAIO_ASYNC = {'CONCURENCY': 3}\n"
    )
    result = run(
        "-m", "aio_async", "--settings", "bad_settings", "flush", PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}"
    )
    assert result.returncode == 2
    assert "Unknown AIO_ASYNC keys ['CONCURENCY']" in result.stderr
    check = run(
        "-m", "django", "check", "--settings", "bad_settings", PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}"
    )
    assert check.returncode != 0
    assert "aio_async.E001" in check.stderr
