"""``-q`` means warnings and errors only: a worker that polls on psycopg2 is advised, not warned."""

from __future__ import annotations

import pytest

from aio_async import schedule
from tests.acceptance.test_cli import run
from tests.app import tasks

pytestmark = pytest.mark.django_db(transaction=True)

CLI = ("-m", "aio_async", "--settings", "tests.settings")


def test_a_quiet_flush_prints_nothing_and_its_outcomes_only_when_asked() -> None:
    schedule(tasks.add, [1, 2])
    result = run(*CLI, "flush", "-q", "--queue", "*")
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    schedule(tasks.add, [1, 2])
    result = run(*CLI, "flush", "-q", "--queue", "*", "--outcomes-json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == '{"outcomes": {"succeeded": 1}}\n'


@pytest.mark.postgres_only
@pytest.mark.psycopg2_only
def test_on_psycopg2_the_polling_notice_is_information() -> None:
    result = run(*CLI, "flush", "--queue", "*")
    assert result.returncode == 0, result.stderr
    [notice] = [line for line in result.stderr.splitlines() if "cannot LISTEN" in line]
    assert " INFO aio_async.store: Django runs on psycopg2 here" in notice
