"""What a new project trips on: no settings beside a manage.py, aio_async missing from
INSTALLED_APPS, and startproject's SQLite settings under ``run --processes 2``."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from tests.acceptance.test_cli import ROOT, environment, run

APP_MISSING = 'add "aio_async" to INSTALLED_APPS'


def run_in(folder: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(folder)])
    env.update(extra)
    return subprocess.run(
        [sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_no_settings_beside_a_manage_py_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manage.py").write_text("")
    for verb in ("run", "flush", "health"):
        result = run_in(tmp_path, "-m", "aio_async", verb)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert "--settings" in lines[0]
        assert "DJANGO_SETTINGS_MODULE" in lines[0]
        assert "--embedded" in lines[0]
    assert not (tmp_path / "aio_async.sqlite3").exists()  # nothing was created


def test_embedded_asked_for_and_demo_still_run_beside_a_manage_py(tmp_path: Path) -> None:
    (tmp_path / "manage.py").write_text("")
    result = run_in(tmp_path, "-m", "aio_async", "--embedded", "flush")
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert "Using settings aio_async.embedded (embedded" in first
    assert f"sqlite {tmp_path / 'aio_async.sqlite3'}" in first
    assert run_in(tmp_path, "-m", "aio_async", "health", "--embedded").returncode == 0
    assert run_in(tmp_path, "-m", "aio_async", "demo").returncode == 0
    both = run_in(tmp_path, "-m", "aio_async", "--embedded", "--settings", "tests.settings", "health")
    assert both.returncode == 2
    assert "not both" in both.stderr


@pytest.mark.django_db(transaction=True)
def test_the_first_line_names_the_settings_and_the_database() -> None:
    result = run("-m", "aio_async", "--settings", "tests.settings", "flush")
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert "Using settings tests.settings and the queue database 'default'" in first
    assert f"({connection.vendor} {connection.settings_dict['NAME']}" in first


NO_APP = """
SECRET_KEY = "x"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
"""


@pytest.mark.parametrize(
    "verb", ["run", "flush", "health", "periodic", "queues", "workers", "prune", "queues pause mail"]
)
def test_without_the_app_every_verb_names_the_fix(tmp_path: Path, verb: str) -> None:
    (tmp_path / "noapp.py").write_text(NO_APP)
    result = run_in(tmp_path, "-m", "aio_async", "--settings", "noapp", *verb.split())
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert APP_MISSING in result.stderr


def test_without_the_app_schedule_raises_improperly_configured(tmp_path: Path) -> None:
    (tmp_path / "noapp.py").write_text(NO_APP)
    script = (
        "import django; django.setup()\n"
        "from django.core.exceptions import ImproperlyConfigured\n"
        "import aio_async\n"
        "try:\n"
        "    aio_async.schedule('os.getcwd')\n"
        "except ImproperlyConfigured as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = run_in(tmp_path, "-c", script, DJANGO_SETTINGS_MODULE="noapp")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused: ")
    assert APP_MISSING in result.stdout


STARTPROJECT_SQLITE = """
from tests.settings import *  # noqa: F403

DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {name!r}}}}}
AIO_ASYNC = {{"POLL_INTERVAL": 0.05, "CONCURRENCY": 4}}
"""
SCHEDULE_JOBS = """
import django; django.setup()
from aio_async import schedule
from django.db import transaction
with transaction.atomic():
    for number in range({jobs}):
        schedule("tests.app.tasks.read_then_write", [f"k{{number % 7}}"])
"""


@pytest.mark.sqlite_only
def test_startproject_sqlite_settings_under_two_processes_lock_nothing(tmp_path: Path) -> None:
    jobs = 240
    database = tmp_path / "db.sqlite3"
    (tmp_path / "startproject.py").write_text(STARTPROJECT_SQLITE.format(name=str(database)))
    env = {"DJANGO_SETTINGS_MODULE": "startproject"}
    migrated = run_in(tmp_path, "-m", "django", "migrate", "-v0", **env)
    assert migrated.returncode == 0, migrated.stderr
    scheduled = run_in(tmp_path, "-c", SCHEDULE_JOBS.format(jobs=jobs), **env)
    assert scheduled.returncode == 0, scheduled.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "aio_async", "--settings", "startproject", "run", "--processes", "2"],
        cwd=tmp_path,
        env={**environment(), "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.closing(sqlite3.connect(database, timeout=20)) as db:
                (left,) = db.execute(
                    "SELECT count(*) FROM aio_async_job WHERE status IN ('queued', 'running')"
                ).fetchone()
            if not left:
                break
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    with contextlib.closing(sqlite3.connect(database, timeout=20)) as db:  # closed, not only committed
        errors = [message for (message,) in db.execute("SELECT message FROM aio_async_error")]
        statuses = dict(db.execute("SELECT status, count(*) FROM aio_async_job GROUP BY status").fetchall())
    assert errors == [], errors[:3]
    assert statuses == {"succeeded": jobs}, (statuses, stderr[-2000:])
    assert "(aio_async.W002)" in stderr
    assert "(aio_async.W003)" in stderr
    assert "This worker sets transaction_mode 'IMMEDIATE' and timeout" in stderr


def test_without_the_app_a_task_defined_in_a_models_module_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "__init__.py").write_text("")
    (tmp_path / "proj" / "models.py").write_text(
        "import aio_async\n\n\n@aio_async.task\ndef hello() -> None: ...\n"
    )
    (tmp_path / "noapp.py").write_text(
        NO_APP.replace('"django.contrib.auth"]', '"django.contrib.auth", "proj"]')
    )
    result = run_in(tmp_path, "-m", "aio_async", "--settings", "noapp", "health")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert APP_MISSING in result.stderr
