"""python -m aio_async queues and workers, end to end."""

from __future__ import annotations

import json

import pytest

from aio_async import schedule
from aio_async.models import Queue
from tests.acceptance.test_cli import run
from tests.app import tasks

pytestmark = pytest.mark.django_db(transaction=True)

CLI = ("-m", "aio_async", "--settings", "tests.settings")


def test_queues_pause_resume_and_list() -> None:
    schedule(tasks.add, [1, 1], queue="mail")
    paused = run(*CLI, "queues", "pause", "mail", "--by", "ops")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout) == {"queue": "mail", "state": "paused", "changed": True}
    assert Queue.objects.get(name="mail").changed_by == "ops"
    listed = run(*CLI, "queues")
    assert listed.returncode == 0, listed.stderr
    [mail] = [queue for queue in json.loads(listed.stdout) if queue["queue"] == "mail"]
    assert (mail["paused"], mail["jobs"], mail["due"]) == (True, {"queued": 1}, 1)
    resumed = run(*CLI, "queues", "resume", "mail")
    assert json.loads(resumed.stdout) == {"queue": "mail", "state": "running", "changed": True}
    assert not Queue.objects.get(name="mail").paused


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("queues", "pause"), "queues pause: error: which queue?"),
        (("queues", "stop", "mail"), "invalid choice: 'stop'"),
        (("queues", "pause", ""), "queues pause: error: which queue?"),
        (("queues", "pause", "x" * 300), "queues pause: error: queue must be a non-empty string"),
    ],
)
def test_queues_with_bad_arguments_say_what_is_wrong(arguments: tuple[str, ...], message: str) -> None:
    result = run(*CLI, *arguments)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert not Queue.objects.exists()


def test_workers_lists_none_when_none_runs() -> None:
    result = run(*CLI, "workers")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
