"""A worker started before ``migrate`` says so in one line and exits 2, from every entry point.

Each test gets a fresh database without any table: on PostgreSQL a throw-away database on the
test server, on SQLite a new file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

import aio_async
from tests.acceptance.test_cli import run
from tests.acceptance.test_cli_processes import exit_code, started

pytestmark = pytest.mark.django_db(transaction=True)

#: Every migration aio_async ships, from its folder.
MIGRATIONS = sorted(path.stem for path in (Path(aio_async.__file__).parent / "migrations").glob("0*.py"))
MISSING = (
    f"database 'default' lacks aio_async's migrations {', '.join(MIGRATIONS)}: run "
    "`python manage.py migrate` before starting a worker"
)


@pytest.fixture
def unmigrated(tmp_path: Path) -> Iterator[str]:
    """The name of a new, empty database, for AIO_ASYNC_TEST_DB_NAME."""
    if connection.vendor != "postgresql":
        yield str(tmp_path / "unmigrated.sqlite3")
        return
    name = f"test_aio_async_unmigrated_{os.getpid()}"
    quoted = connection.ops.quote_name(name)
    with connection.cursor() as cursor:  # autocommit: CREATE DATABASE cannot run in a transaction
        cursor.execute(f"DROP DATABASE IF EXISTS {quoted}")
        cursor.execute(f"CREATE DATABASE {quoted}")
    try:
        yield name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted}")


def errors(stderr: str) -> list[str]:
    """stderr's lines but the first, where a worker names its settings and database."""
    return [line for line in stderr.splitlines() if "aio_async.cli: Using settings" not in line]


def missing_migrations(stderr: str) -> str:
    """The one line of stderr (but the settings line), which must name the missing migrations."""
    lines = errors(stderr)
    assert len(lines) == 1, stderr
    assert MISSING in lines[0]
    return lines[0]


@pytest.mark.parametrize("verb", ["run", "flush"])
def test_run_and_flush_before_migrate_say_run_migrate_and_exit_2(verb: str, unmigrated: str) -> None:
    result = run("-m", "aio_async", "--settings", "tests.settings", verb, AIO_ASYNC_TEST_DB_NAME=unmigrated)
    assert result.returncode == 2
    assert missing_migrations(result.stderr) == f"aio_async: configuration error: {MISSING}"
    assert result.stdout == ""


def test_flush_queue_before_migrate_says_run_migrate_and_exits_2(unmigrated: str) -> None:
    result = run(
        "-m", "django", "flush_queue", "--settings", "tests.settings", AIO_ASYNC_TEST_DB_NAME=unmigrated
    )
    assert result.returncode == 2
    assert missing_migrations(result.stderr) == f"CommandError: {MISSING}"


def test_a_supervisor_does_not_restart_workers_that_cannot_start_before_migrate(unmigrated: str) -> None:
    with started(
        "--settings", "tests.settings", "run", "--processes", "2", AIO_ASYNC_TEST_DB_NAME=unmigrated
    ) as (process, log):
        code = exit_code(process, timeout=60)
        output = log.read_text()
    assert code == 2, output
    assert output.count(f"aio_async: configuration error: {MISSING}") >= 1
    assert "restarting it would not help" in output
    assert "; restarting it\n" not in output


@pytest.mark.postgres_only
def test_a_database_that_does_not_exist_is_a_configuration_error_not_an_outage() -> None:
    name = f"test_aio_async_nowhere_{os.getpid()}"
    result = run("-m", "aio_async", "--settings", "tests.settings", "run", AIO_ASYNC_TEST_DB_NAME=name)
    assert result.returncode == 2, result.stderr
    assert errors(result.stderr.strip()) == [
        f"aio_async: configuration error: database 'default' ({name!r}) does not exist on the server: "
        f"create it (createdb {name}) or fix DATABASES['default']['NAME']"
    ]
