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
    result = run("-m", "aio_async", "--settings", "tests.settings", "flush", "--outcomes-json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"outcomes": {"succeeded": 4}}
    assert sorted(Record.objects.values_list("key", flat=True)) == ["a", "b", "c", "d"]
    assert not Job.objects.exclude(status=Status.SUCCEEDED).exists()


def test_flush_queue_management_command_with_filters_and_a_job_limit() -> None:
    schedule(tasks.write, ["w1"])
    schedule(tasks.write, ["w2"])
    schedule(tasks.add, [1, 2])
    admin = ["-m", "django", "flush_queue", "--settings", "tests.settings"]
    result = run(*admin, "--exclude", "write", "--outcomes-json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"outcomes": {"succeeded": 1}}
    result = run(*admin, "--filter", "write", "--jobs", "1", "--outcomes-json")
    assert json.loads(result.stdout) == {"outcomes": {"succeeded": 1}}
    assert Record.objects.count() == 1
    result = run(*admin)
    assert result.returncode == 0
    assert result.stdout == ""  # the outcomes only when asked
    assert "stopped: 1 succeeded" in result.stderr
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


def test_stats_prints_each_queues_figures_as_json() -> None:
    schedule(tasks.write, ["s"], queue="mail")
    sleeping = schedule(tasks.write, ["z"], queue="mail")
    Job.objects.filter(pk=sleeping.pk).update(status=Status.SUSPENDED)  # as a durable sleep leaves it
    result = run("-m", "aio_async", "--settings", "tests.settings", "stats", "--window", "30")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["window_seconds"] == 30
    assert (report["queues"]["mail"]["due"], report["queues"]["mail"]["suspended"]) == (1, 1)
    assert report["queues"]["mail"]["pickup_latency_seconds"]["attempts"] == 0


@pytest.mark.parametrize("window", ["0", "soon", "700000"])
def test_stats_refuses_a_window_that_is_no_number_of_seconds_up_to_a_week(window: str) -> None:
    result = run("-m", "aio_async", "--settings", "tests.settings", "stats", "--window", window)
    assert result.returncode == 2
    assert "argument --window: must be" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_works_until_a_signal_then_lets_the_running_job_finish_and_exits_0(
    signum: int, tmp_path: Path
) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "aio_async", "--settings", "tests.settings", "run", "--concurrency", "2"]
        + (["--outcomes-json"] if signum == signal.SIGTERM else []),
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
    if signum == signal.SIGTERM:  # asked for
        assert json.loads(stdout) == {"outcomes": {"succeeded": 2}}
    else:  # nothing on stdout; the same counts on stderr
        assert stdout == ""
        assert "stopped: 2 succeeded" in stderr
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


# The demo runs on its own SQLite file, whatever the settings say -----------------------


def test_demo_ignores_the_projects_settings_and_never_touches_its_database(tmp_path: Path) -> None:
    from aio_async.demo.models import Note
    from aio_async.demo.tasks import write_note

    project_job = write_note.schedule(["the project's own demo job"])
    Note.objects.create(text="the project's own note")
    env = environment(DJANGO_SETTINGS_MODULE="tests.settings")
    env.pop("AIO_ASYNC_SQLITE", None)
    result = subprocess.run(
        [sys.executable, "-m", "aio_async", "--settings", "tests.settings", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All done." in result.stdout
    ignoring = [line for line in result.stderr.splitlines() if "ignoring" in line]
    assert ignoring == [
        "aio_async demo: ignoring --settings tests.settings and DJANGO_SETTINGS_MODULE=tests.settings: "
        f"the demo runs on its own SQLite file {tmp_path / 'aio_async.sqlite3'} (aio_async.embedded), "
        "never on another database"
    ]
    assert (tmp_path / "aio_async.sqlite3").exists()
    assert list(Job.objects.values_list("pk", flat=True)) == [project_job.pk]
    assert Job.objects.get().status == Status.QUEUED
    assert list(Note.objects.values_list("text", flat=True)) == ["the project's own note"]


def test_demo_says_nothing_of_settings_it_was_not_given(tmp_path: Path) -> None:
    env = environment()
    env.pop("AIO_ASYNC_SQLITE", None)
    result = subprocess.run(
        [sys.executable, "-m", "aio_async", "demo", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ignoring" not in result.stderr


# Options pass the checks of the settings they replace ----------------------------------


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (
            ["run", "--shutdown-timeout", "-1"],
            "run: error: --shutdown-timeout must be a number >= 0.0, got -1.0.",
        ),
        (["run", "--concurrency", "0"], "run: error: --concurrency must be an integer >= 1, got 0."),
        (["flush", "--concurrency", "-3"], "flush: error: --concurrency must be an integer >= 1, got -3."),
        (["run", "--poll-interval", "0"], "run: error: --poll-interval must be a number >= 0.01, got 0.0."),
        (["run", "--poll-interval", "nan"], "run: error: --poll-interval must be a number >= 0.01, got nan."),
        (["flush", "--queue", ""], "flush: error: --queue must hold non-empty strings, got ['']."),
        (["flush", "--jobs", "0"], "flush: error: argument --jobs: must be at least 1, got 0 (see --help)"),
        (
            ["run", "--concurrency", "many"],
            "run: error: argument --concurrency: invalid int value: 'many' (see --help)",
        ),
    ],
)
def test_a_bad_option_is_one_line_with_exit_code_2(arguments: list[str], error: str) -> None:
    result = run("-m", "aio_async", "--settings", "tests.settings", *arguments, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"python -m aio_async {error}"]
    assert result.stdout == ""


def test_a_bad_option_of_flush_queue_is_one_line_with_exit_code_2() -> None:
    schedule(tasks.write, ["untouched"])
    result = run(
        "-m", "django", "flush_queue", "--settings", "tests.settings", "--concurrency", "0", timeout=30
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == ["CommandError: --concurrency must be an integer >= 1, got 0."]
    assert not Record.objects.exists()


# Queues: '*' serves every one; a worker names the tasks it will never run ----------------


def test_queue_star_serves_every_queue_from_the_option_or_the_setting() -> None:
    help_text = run("-m", "aio_async", "run", "--help", timeout=30).stdout
    assert "'*' serves every queue" in " ".join(help_text.split())
    schedule(tasks.write, ["mail"], queue="mail")
    schedule(tasks.decorated, ["tasks"])  # @task(queue="tasks")
    schedule(tasks.write, ["default"])
    result = run(
        "-m", "aio_async", "--settings", "tests.settings", "flush", "--queue", "*", "--outcomes-json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"outcomes": {"succeeded": 3}}
    assert "started on queues *" in result.stderr
    assert "--queue '*' for every queue" not in result.stderr
    schedule(tasks.write, ["reports"], queue="reports")
    result = run(
        "-m",
        "aio_async",
        "--settings",
        "tests.settings",
        "flush",
        "--outcomes-json",
        AIO_ASYNC_TEST_SETTINGS='{"QUEUES": ["*"]}',
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"outcomes": {"succeeded": 1}}
    assert sorted(Record.objects.values_list("key", flat=True)) == ["default", "mail", "reports", "tasks"]


def test_a_worker_warns_once_about_registered_tasks_on_queues_it_does_not_serve() -> None:
    job = schedule(tasks.decorated, ["waits"])
    result = run("-m", "aio_async", "--settings", "tests.settings", "flush")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "--queue '*' for every queue" in line]
    assert len(warnings) == 1, result.stderr
    assert "WARNING aio_async.executor" in warnings[0]
    assert "tasks: tests.app.tasks.decorated" in warnings[0]
    assert "--queue tasks" in warnings[0]
    job.refresh_from_db()
    assert job.status == Status.QUEUED
    served = run(
        "-m", "aio_async", "--settings", "tests.settings", "flush", "--queue", "tasks", "--queue", "default"
    )
    assert "--queue '*' for every queue" not in served.stderr


# Settings: one line when they cannot be imported; accepted after the verb ----------------


@pytest.mark.parametrize(
    "arguments",
    [
        ["--settings", "nosuch.settings", "flush"],
        ["run", "--settings", "nosuch.settings"],
        ["health", "--settings", "nosuch.settings"],
    ],
)
def test_a_settings_module_that_cannot_be_imported_is_one_line_with_exit_code_2(arguments: list[str]) -> None:
    result = run("-m", "aio_async", *arguments, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "aio_async: cannot import settings module 'nosuch.settings': No module named 'nosuch'"
    ]


def test_a_wrong_django_settings_module_is_one_line_too() -> None:
    result = run("-m", "aio_async", "flush", DJANGO_SETTINGS_MODULE="tests.nosuch", timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "aio_async: cannot import settings module 'tests.nosuch': No module named 'tests.nosuch'"
    ]


def test_settings_and_verbosity_after_the_verb_as_with_manage_py() -> None:
    schedule(tasks.write, ["after"])
    result = run(
        "-m", "aio_async", "flush", "--settings", "tests.settings", "--verbosity", "0", "--outcomes-json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"outcomes": {"succeeded": 1}}
    assert "succeeded" not in result.stderr  # verbosity 0: warnings and errors only
    report = run("-m", "aio_async", "health", "--settings", "tests.settings")
    assert json.loads(report.stdout)["executed"] == 1


# One line per finished job, from the CLI and from the management commands ----------------

FLUSH_COMMANDS = {
    "cli": ["-m", "aio_async", "--settings", "tests.settings", "flush"],
    "manage.py": ["-m", "django", "flush_queue", "--settings", "tests.settings"],
}


@pytest.mark.parametrize("entry", sorted(FLUSH_COMMANDS))
@pytest.mark.parametrize("verbosity", ["1", "2"])
def test_flush_shows_a_failed_job_and_with_v2_each_finished_job(entry: str, verbosity: str) -> None:
    good = schedule(tasks.write, ["fine"])
    bad = schedule(tasks.write_then_fail, ["broken"], max_attempts=1)
    result = run(*FLUSH_COMMANDS[entry], "--outcomes-json", "-v", verbosity)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"outcomes": {"failed": 1, "succeeded": 1}}
    lines = result.stderr.splitlines()
    failed = [line for line in lines if f"Job {bad.pk} (tests.app.tasks.write_then_fail" in line]
    assert len(failed) == 1, result.stderr
    assert "ERROR aio_async.jobs" in failed[0]
    assert "failed for good" in failed[0]
    assert "ValueError: failing after writing broken" in failed[0]
    succeeded = [line for line in lines if f"Job {good.pk} (tests.app.tasks.write," in line]
    if verbosity == "1":  # the default: a success is counted in the summaries, not a line of its own
        assert succeeded == [], result.stderr
        assert "stopped: 1 failed, 1 succeeded" in result.stderr
        return
    assert len(succeeded) == 1, result.stderr
    assert "DEBUG aio_async.jobs" in succeeded[0]
    assert "succeeded" in succeeded[0]


@pytest.mark.parametrize(("entry", "quiet"), [("cli", "-q"), ("cli", "-v0"), ("manage.py", "--verbosity=0")])
def test_verbosity_0_shows_only_warnings_and_errors(entry: str, quiet: str) -> None:
    good = schedule(tasks.write, ["fine"])
    bad = schedule(tasks.write_then_fail, ["broken"], max_attempts=1)
    result = run(*FLUSH_COMMANDS[entry], quiet)
    assert result.returncode == 0, result.stderr
    assert f"Job {bad.pk} (tests.app.tasks.write_then_fail" in result.stderr
    assert f"Job {good.pk} (" not in result.stderr
    assert " INFO " not in result.stderr


@pytest.mark.parametrize("entry", sorted(FLUSH_COMMANDS))
def test_job_lines_go_through_the_projects_logging_when_it_has_a_handler(entry: str, tmp_path: Path) -> None:
    (tmp_path / "logging_settings.py").write_text(
        "from tests.settings import *  # noqa\n"
        "LOGGING = {\n"
        "    'version': 1,\n"
        "    'disable_existing_loggers': False,\n"
        "    'formatters': {'project': {'format': 'PROJECT %(levelname)s %(message)s'}},\n"
        "    'handlers': {'console': {'class': 'logging.StreamHandler', 'formatter': 'project'}},\n"
        "    'root': {'handlers': ['console'], 'level': 'WARNING'},\n"
        "}\n"
    )
    good = schedule(tasks.write, ["fine"])
    bad = schedule(tasks.write_then_fail, ["broken"], max_attempts=1)
    arguments = [argument.replace("tests.settings", "logging_settings") for argument in FLUSH_COMMANDS[entry]]
    result = run(*arguments, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    failed = [line for line in lines if f"Job {bad.pk} (" in line]
    assert len(failed) == 1, result.stderr
    assert failed[0].startswith(
        f"PROJECT ERROR Job {bad.pk} (tests.app.tasks.write_then_fail, attempt 1): failed for good"
    )
    assert "ValueError: failing after writing broken" in failed[0]
    assert not any(f"Job {good.pk} (" in line for line in lines)  # a success is DEBUG
    assert len([line for line in lines if line.startswith("PROJECT INFO Worker ")]) == 2  # started, stopped
    assert not any(" aio_async.jobs: " in line for line in lines)  # no second handler of ours
